"""API keys: created with ``jetflow keys``, checked by the HTTP edge on every request."""

from __future__ import annotations

from domain.access import API_KEY
from projections.access import API_KEYS
from slices.slice import Slice

SLICE = Slice(name="access", aggregates=(API_KEY,), projections=(API_KEYS,))
