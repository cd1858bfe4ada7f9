"""The OpenAPI document says, per operation, who may call it and what its refusals look like.

Litestar builds the paths from the handlers; this adds what it cannot know: the access policy of
each route (``x-jetflow-policy`` and its ``security``), the error envelope on every refusal, and
the WebSocket feed, which OpenAPI has no verb for.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    PathItem,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.routes import HTTPRoute, WebSocketRoute

from api.auth import route_policy
from domain.access import ALLOWED, Policy

SECURITY_SCHEMES = {
    "apiKey": SecurityScheme(
        type="apiKey",
        name="X-API-Key",
        security_scheme_in="header",
        description="An API key from `jetflow keys create --role ROLE --user USER`",
    ),
    "bearer": SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="JWT or API key",
        description="A JWT (HS256 or RS256, claims `sub` and `role`) or an API key",
    ),
    "token": SecurityScheme(
        type="apiKey",
        name="token",
        security_scheme_in="query",
        description="The same credentials as a query parameter, for SSE and WebSocket clients",
    ),
}
_ERROR = OpenAPIMediaType(schema=Reference(ref="#/components/schemas/ErrorEnvelope"))
REFUSALS = {
    "401": "No credentials, or unknown, revoked or expired ones",
    "403": "The caller's role may not use this route",
    "404": "Not found, or owned by another user",
    "422": "Invalid fields",
    "429": "Rate limit reached (rate_limited, see the X-RateLimit-* headers), or too many failed "
    "authentications from this address (auth_failures_exceeded); Retry-After says when",
}
_TEXT = Schema(type=OpenAPIType.STRING)
ERROR_ENVELOPE = Schema(
    type=OpenAPIType.OBJECT,
    description="Every refusal: HTTP status, a stable code, a message, field errors",
    required=["error"],
    properties={
        "error": Schema(
            type=OpenAPIType.OBJECT,
            required=["status", "code", "message", "fields"],
            properties={
                "status": Schema(type=OpenAPIType.INTEGER),
                "code": _TEXT,
                "message": _TEXT,
                "fields": Schema(
                    type=OpenAPIType.ARRAY,
                    items=Schema(
                        type=OpenAPIType.OBJECT,
                        properties={"field": _TEXT, "message": _TEXT},
                    ),
                ),
            },
        )
    },
)
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


async def describe_on_first_read(request: Request[Any, Any, Any]) -> None:
    """Describe access when the document is first asked for, not when the app is built: the
    document costs more than building the rest of the app (most of a test's service start)."""
    app = request.app
    if not app.state.get("openapi_described"):
        describe_access(app)
        app.state["openapi_described"] = True


def describe_access(app: Litestar) -> None:
    schema = app.openapi_schema
    policies: dict[tuple[str, str], Policy | None] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                for method in handler.http_methods:
                    policies[(route.path_format, method.lower())] = route_policy(handler)
    for path, item in (schema.paths or {}).items():
        for method in _METHODS:
            operation: Operation | None = getattr(item, method)
            if operation is not None:
                _describe(operation, policies.get((path, method)))
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            _add_websocket(schema.paths, route)
    components = schema.components
    if not isinstance(components, Components):
        raise TypeError("the OpenAPI document has no single components object")
    components.security_schemes = {**(components.security_schemes or {}), **SECURITY_SCHEMES}
    components.schemas = {
        **(components.schemas or {}),
        "ErrorEnvelope": ERROR_ENVELOPE,
    }


def _describe(operation: Operation, policy: Policy | None) -> None:
    policy = policy or Policy.admin  # closed by the guard; say so rather than nothing
    roles = ", ".join(sorted(ALLOWED[policy]))
    operation.description = "\n\n".join(
        filter(None, [operation.description, f"Access: `{policy}` (roles: {roles})."])
    )
    responses = dict(operation.responses or {})
    if policy is Policy.public:
        operation.security = []
        wanted = ("429",)
    else:
        operation.security = [{name: []} for name in SECURITY_SCHEMES]
        wanted = tuple(REFUSALS)
    for status in wanted:
        responses.setdefault(
            status,
            OpenAPIResponse(description=REFUSALS[status], content={"application/json": _ERROR}),
        )
    operation.responses = responses


def _add_websocket(paths: Any, route: WebSocketRoute) -> None:
    handler = route.route_handler
    policy = route_policy(handler) or Policy.admin
    operation = Operation(
        summary="Live events over a WebSocket (upgrade)",
        description=(handler.fn.__doc__ or "").strip(),
        tags=["live"],
        operation_id="EventsWebSocket",
        security=[{name: []} for name in SECURITY_SCHEMES],
        responses={
            "101": OpenAPIResponse(description="Switching protocols; JSON messages follow"),
            **{
                status: OpenAPIResponse(description=text, content={"application/json": _ERROR})
                for status, text in REFUSALS.items()
                if status in ("401", "403")
            },
        },
    )
    _describe(operation, policy)
    paths[route.path_format] = PathItem(get=operation)
