"""The catalogue of violation categories that file comments name."""

from __future__ import annotations

from api import violations as http
from domain.violations import VIOLATIONS
from handlers.violations import seed_violations
from projections.files import VIOLATIONS_CATALOGUE
from slices.slice import Slice

SLICE = Slice(
    name="violations",
    aggregates=(VIOLATIONS,),
    projections=(VIOLATIONS_CATALOGUE,),
    routes=http.ROUTES,
    seeds=(lambda rt: seed_violations(rt.commands, rt.settings.violations_file),),
)
