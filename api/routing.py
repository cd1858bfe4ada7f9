"""The one ``/api/v1`` router: every slice's controllers declare paths relative to it."""

from __future__ import annotations

from collections.abc import Sequence

from litestar import Router
from litestar.types import ControllerRouterHandler

API_V1 = "/api/v1"


def api_v1(route_handlers: Sequence[ControllerRouterHandler]) -> Router:
    """The versioned API: a new version mounts its own router, so none of these paths move."""
    return Router(path=API_V1, route_handlers=list(route_handlers))
