"""The idle-compute seed's own API, served beside /api/v1 over the tasks slice's commands and
read models (``api.seeds.idle_compute``); it declares no aggregate or projection of its own."""

from __future__ import annotations

from api.seeds import idle_compute
from slices.slice import Slice

SLICE = Slice(name="seed_idle_compute", mounts=(idle_compute.mount,))
