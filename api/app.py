"""The Litestar application: routes, error envelope, OpenAPI, and the runtime as a dependency."""

from __future__ import annotations

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from api.auth import AuthMiddleware, KeyCache, policy_guard, rate_limit
from api.dependencies import dependencies
from api.errors import EXCEPTION_HANDLERS
from api.health import VERSION
from api.http import PUBLIC
from api.openapi import describe_on_first_read
from api.routing import api_v1
from api.runtime import Runtime
from handlers.render import load_hardware_configs


def create_app(runtime: Runtime) -> Litestar:
    """Build the app around an already started runtime (its lifetime is the caller's)."""
    app = Litestar(
        route_handlers=[api_v1(runtime.catalogue.routes)],
        dependencies=dependencies(runtime),
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            rate_limit(runtime.settings.rate_limit_per_minute),
            DefineMiddleware(AuthMiddleware),
        ],
        guards=[policy_guard],
        openapi_config=OpenAPIConfig(
            title="jetflow",
            version=VERSION,
            openapi_router=Router(
                "/schema",
                route_handlers=[],
                opt=PUBLIC,
                before_request=describe_on_first_read,
            ),
        ),
        debug=False,
        state=State(
            {
                "runtime": runtime,
                "api_keys": KeyCache(runtime.settings.key_cache_s),
                "hardware_configs": load_hardware_configs(runtime.settings.hardware_configs),
            }
        ),
    )
    return app
