"""What operators read across slices: health and its probes, the live event feeds, the audit
trail, and the parked events they resolve."""

from __future__ import annotations

from api import audit, events, health, parked, probes
from domain.parking import PARKING
from projections.parking import PARKED
from slices.slice import Slice

SLICE = Slice(
    name="operations",
    aggregates=(PARKING,),
    projections=(PARKED,),
    routes=(*health.ROUTES, *probes.ROUTES, *events.ROUTES, *audit.ROUTES, *parked.ROUTES),
)
