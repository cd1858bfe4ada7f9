"""What operators read across slices: health, the live event feeds and the audit trail."""

from __future__ import annotations

from api import audit, events, health
from slices.slice import Slice

SLICE = Slice(name="operations", routes=(*health.ROUTES, *events.ROUTES, *audit.ROUTES))
