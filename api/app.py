"""The Litestar application: routes, error envelope, OpenAPI, and the runtime as a dependency."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from api.auth import AuthMiddleware, KeyCache, policy_guard, rate_limit
from api.client_address import TrustedProxies
from api.dependencies import dependencies
from api.errors import EXCEPTION_HANDLERS
from api.health import VERSION
from api.http import PUBLIC
from api.log_redaction import redact
from api.logs import in_request
from api.metrics import MetricsController, http_metrics
from api.openapi import describe_on_first_read
from api.rate_limit import AuthFailureLimiter
from api.root import ROUTES as ROOT_ROUTES
from api.routing import api_v1
from api.runtime import Runtime
from handlers.render import load_hardware_configs


class App(Litestar):
    """The app, every request given its request id before anything else of it runs (routing,
    authentication, the HTTP span), so that every line logged for it names it, a 404 too."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await in_request(super().__call__, scope, receive, send)


def create_app(runtime: Runtime) -> Litestar:
    """Build the app around an already started runtime (its lifetime is the caller's)."""
    settings = runtime.settings
    proxies = TrustedProxies.parse(settings.trusted_proxies)
    seeds = [r for mount in runtime.catalogue.mounts if (r := mount(settings)) is not None]
    # A seed served at the root answers ``/`` itself (with jetflow's pointers beside its own).
    root = () if any(r.path == "/" for r in seeds) else ROOT_ROUTES
    app = App(
        route_handlers=[api_v1(runtime.catalogue.routes), MetricsController, *root, *seeds],
        dependencies=dependencies(runtime),
        exception_handlers=EXCEPTION_HANDLERS,
        # Request metrics outermost, so refusals by authentication are counted too; then
        # authentication: the rate limiter inside it counts only verified credentials.
        middleware=[
            http_metrics(runtime.metrics),
            DefineMiddleware(AuthMiddleware),
            rate_limit(settings.rate_limit_per_minute, proxies),
        ],
        guards=[policy_guard],
        plugins=runtime.tracing.http_plugins(redact),
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
        # Logging is `jetflow serve`'s (``api.logs``): Litestar's default would reconfigure the
        # root logger in its own format when the app is built.
        logging_config=None,
        state=State(
            {
                "runtime": runtime,
                "api_keys": KeyCache(settings.key_cache_s),
                "auth_failures": AuthFailureLimiter(settings.auth_failures_per_minute, proxies),
                "hardware_configs": load_hardware_configs(settings.hardware_configs),
            }
        ),
    )
    return app
