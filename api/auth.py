"""Authentication, the per-route policy guard, ownership scope and rate limiting.

Every route declares a ``Policy`` in its ``opt`` (see ``api.http.policy``); the guard refuses a
route that declares none, so a route added without thinking about access is closed, and the
route-matrix test names it. Credentials: ``X-API-Key: jfk_…``, ``Authorization: Bearer <API key
or JWT>``, or ``?token=`` for SSE and WebSocket clients that cannot set headers.

Rate limiting comes after authentication (``api.rate_limit``): a credential's bucket counts only
requests in which it verified, and a failed authentication counts against the client address.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import HttpMethod
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
    DefineMiddleware,
)
from litestar.types import Scope
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select

from adapters import log_context
from adapters.credentials import InvalidToken, JwtVerifier, parse_api_key
from api.client_address import TrustedProxies
from api.rate_limit import AuthFailureLimiter, FixedWindowLimiter, RateLimitMiddleware
from api.runtime import Runtime
from domain.access import Policy, Role, UserName, allowed, sees_everything
from projections.access import api_keys

_USER: TypeAdapter[str] = TypeAdapter(UserName)
_EXPIRES: TypeAdapter[float] = TypeAdapter(float)


@dataclass(frozen=True)
class Principal:
    user: str
    role: Role
    # "key:<id>" or "jwt:<user>": the rate-limit bucket and the share of live feeds it holds
    credential: str
    # When the credential stops working by itself (a JWT's ``exp``, epoch seconds); keys: None.
    expires_at: float | None = None

    @property
    def actor(self) -> str:
        return f"user:{self.user}"

    @property
    def owner_scope(self) -> str | None:
        """The owner whose aggregates this caller is limited to; None when it sees all."""
        return None if sees_everything(self.role) else self.user


# A route's ``opt`` that lets a client pass its credential as ``?token=``: only live feeds,
# whose browser clients (EventSource, WebSocket) cannot set headers. Anywhere else a URL would
# carry the secret into histories, proxies and logs.
QUERY_TOKEN = {"query_token": True}


def presented_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    if key := connection.headers.get("X-API-Key"):
        return key
    scheme, _, value = connection.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    token = connection.query_params.get("token")
    if token is None:
        return None
    handler = connection.scope.get("route_handler")
    if handler is None or not handler.opt.get("query_token"):
        raise NotAuthorizedException(
            "?token= is accepted by live feeds only; send the X-API-Key or Authorization header"
        )
    return token


class KeyCache:
    """Recently found keys; a revocation takes effect within ``ttl_s``. Misses are not kept,
    so a key works as soon as the read model has it."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._rows: dict[str, tuple[float, tuple[str, str, str]]] = {}

    async def lookup(self, runtime: Runtime, key_id: str) -> tuple[str, str, str] | None:
        now = time.monotonic()
        cached = self._rows.get(key_id)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        async with runtime.sessions() as session:
            row = (
                await session.execute(
                    select(api_keys.c.user, api_keys.c.role, api_keys.c.digest).where(
                        api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None)
                    )
                )
            ).first()
        if row is None:
            return None
        if len(self._rows) > 10_000:
            self._rows.clear()
        self._rows[key_id] = (now, (row.user, row.role, row.digest))
        return self._rows[key_id][1]

    def fresh_for(self, key_id: str) -> float:
        """Seconds until ``lookup`` reads ``key_id`` from the read model again (0: at the next
        call): a live feed re-checks its key then, so it ends within ``ttl_s`` of a revocation
        as a request would."""
        cached = self._rows.get(key_id)
        if cached is None:
            return 0.0
        return max(0.0, cached[0] + self.ttl_s - time.monotonic())


class AuthMiddleware(AbstractAuthenticationMiddleware):
    """Resolves credentials to a ``Principal``; no credentials leaves the caller anonymous
    (the guard decides), wrong ones answer 401 at once and count against the client address,
    which answers 429 ``auth_failures_exceeded`` for any credentials once it failed too often."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        token = presented_token(connection)
        if token is None:
            return AuthenticationResult(user=_anonymous(connection), auth=None)
        failures: AuthFailureLimiter = connection.app.state["auth_failures"]
        address = failures.admit(connection.scope)
        try:
            principal = await _verified(connection, token)
        except NotAuthorizedException:
            failures.failed(address)
            raise
        log_context.note(actor=principal.actor)
        return AuthenticationResult(user=principal, auth=token)


ANONYMOUS = "anonymous"
# The credential of every anonymous caller: its rate-limit bucket is still per client address.
ANONYMOUS_CREDENTIAL = "anonymous"


def _anonymous(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The caller without credentials: nobody (the guard refuses it where a policy needs a
    role), or user ``anonymous`` in ``JETFLOW_ANONYMOUS_ROLE`` when the operator opened the
    service to the seeds' credential-less clients. One rule for every route."""
    runtime: Runtime = connection.app.state["runtime"]
    role = runtime.settings.anonymous_role
    if role is None:
        return None
    return Principal(ANONYMOUS, Role(role), ANONYMOUS_CREDENTIAL)


async def _verified(connection: ASGIConnection[Any, Any, Any, Any], token: str) -> Principal:
    runtime: Runtime = connection.app.state["runtime"]
    presented = parse_api_key(token)
    if presented is None:
        return _from_jwt(runtime, token)
    keys: KeyCache = connection.app.state["api_keys"]
    found = await keys.lookup(runtime, presented.key_id)
    if found is None or not presented.matches(found[2]):
        raise NotAuthorizedException("The API key is unknown or revoked")
    return Principal(found[0], Role(found[1]), f"key:{presented.key_id}")


def _from_jwt(runtime: Runtime, token: str) -> Principal:
    settings = runtime.settings
    if settings.jwt_key is None:
        raise NotAuthorizedException("The credentials are neither an API key nor an accepted JWT")
    verifier = JwtVerifier(
        settings.jwt_algorithm,
        settings.jwt_key,
        settings.jwt_audience,
        max_lifetime_s=settings.jwt_max_lifetime_s,
    )
    try:
        claims = verifier.claims(token)
        user = _USER.validate_python(claims["sub"])
        role = Role(str(claims.get("role", Role.viewer)))
        expires = _EXPIRES.validate_python(claims["exp"])
    except (InvalidToken, ValidationError, ValueError) as refused:
        raise NotAuthorizedException(f"The bearer token is not accepted: {refused}") from None
    return Principal(user, role, f"jwt:{user}", expires_at=expires)


def route_policy(handler: BaseRouteHandler) -> Policy | None:
    value = handler.opt.get("policy")
    if value is not None:
        return Policy(value)
    if isinstance(handler, HTTPRouteHandler) and handler.http_methods == {HttpMethod.OPTIONS}:
        return Policy.public  # Litestar's own OPTIONS answer: allowed methods, no data
    return None


def policy_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    policy = route_policy(handler)
    if policy is None:
        raise PermissionDeniedException("This route has no access policy and is closed")
    if policy is Policy.public:
        return
    principal = connection.scope.get("user")
    if not isinstance(principal, Principal):
        raise NotAuthorizedException("Credentials are required: an API key or a bearer token")
    if not allowed(principal.role, policy):
        raise PermissionDeniedException(
            f"The {principal.role} role may not use this route (it needs {policy} access)"
        )


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    user = connection.scope.get("user")
    return user if isinstance(user, Principal) else None


def rate_limit(per_minute: int, proxies: TrustedProxies) -> DefineMiddleware:
    """Per verified credential (the anonymous share one bucket per client address); headers as
    in the seed. Mounted inside ``AuthMiddleware``: what it counts has already verified."""

    def identify(scope: Scope) -> str:
        principal = scope.get("user")
        if isinstance(principal, Principal) and principal.credential != ANONYMOUS_CREDENTIAL:
            return principal.credential
        return f"addr:{proxies.client(scope)}"

    return DefineMiddleware(
        RateLimitMiddleware,
        limiter=FixedWindowLimiter(per_minute),
        identify=identify,
        exclude=("/schema",),
    )
