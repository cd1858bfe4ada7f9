"""What operators read across slices: health and its probes, the live event feeds, the audit
trail."""

from __future__ import annotations

from api import audit, events, health, probes
from slices.slice import Slice

SLICE = Slice(
    name="operations",
    routes=(*health.ROUTES, *probes.ROUTES, *events.ROUTES, *audit.ROUTES),
)
