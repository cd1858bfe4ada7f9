"""Per-key rate limiting with the seed's X-RateLimit-* headers.

Hand-written instead of Litestar's ``RateLimitMiddleware``: that one keeps a timestamp per
request for the whole window and JSON-encodes the list through its store on every request, so a
request costs more the more came before it in the minute (py-spy: 15-20 % of the service's
samples under load, and 400 instead of 730 POST/s; see bench/results.md). A fixed window with a
counter per key costs the same for every request. The state is per process, like the store
Litestar's middleware used by default.

Only a credential that verified is counted against its bucket: the middleware runs inside
``api.auth.AuthMiddleware``, so a request with someone's key id and a wrong secret never reaches
that key's bucket (it would lock the key's owner out). Failed authentications are counted per
client address instead (``AuthFailureLimiter``), and an address that fails too often is refused
whatever it presents until its window ends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import TooManyRequestsException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.client_address import TrustedProxies
from api.errors import ApiError

WINDOW_S = 60.0


@dataclass
class _Window:
    started: float
    used: int


class FixedWindowLimiter:
    """``limit`` requests per key per window; answers what the headers should say."""

    def __init__(self, limit: int, window_s: float = WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._windows: dict[str, _Window] = {}

    def take(self, key: str, now: float) -> tuple[bool, int, int]:
        """Count one request: (allowed, remaining, seconds until the window resets)."""
        window = self._windows.get(key)
        if window is None or now - window.started >= self.window_s:
            if len(self._windows) > 100_000:  # forget idle keys rather than grow without bound
                self._windows = {
                    k: w for k, w in self._windows.items() if now - w.started < self.window_s
                }
            window = self._windows[key] = _Window(now, 0)
        reset = max(1, math.ceil(window.started + self.window_s - now))
        if window.used >= self.limit:
            return False, 0, reset
        window.used += 1
        return True, self.limit - window.used, reset

    def exhausted(self, key: str, now: float) -> int | None:
        """Seconds until ``key``'s window resets if it has nothing left; None if it has (or
        no window). Counts nothing: a refused request is not held against the next window."""
        window = self._windows.get(key)
        if window is None or now - window.started >= self.window_s or window.used < self.limit:
            return None
        return max(1, math.ceil(window.started + self.window_s - now))


class AuthFailureLimiter:
    """``per_minute`` failed authentications per client address; then 429 for every request
    from it that carries credentials, right or wrong, until the window resets. Guessing a
    secret (or filling someone's bucket by naming their key) costs the guesser's address, and
    other addresses, and the key named, keep working."""

    def __init__(self, per_minute: int, proxies: TrustedProxies) -> None:
        self.limiter = FixedWindowLimiter(per_minute)
        self.proxies = proxies

    def admit(self, scope: Scope) -> str:
        """The client address of a request with credentials, refused if it failed too often."""
        address = self.proxies.client(scope)
        reset = self.limiter.exhausted(address, time.monotonic())
        if reset is not None:
            raise ApiError(
                429,
                "auth_failures_exceeded",
                f"More than {self.limiter.limit} failed authentications in a minute from this "
                f"address; retry in {reset} s",
                headers={"Retry-After": str(reset)},
            )
        return address

    def failed(self, address: str) -> None:
        self.limiter.take(address, time.monotonic())


class RateLimitMiddleware:
    """ASGI middleware: counts each HTTP request against ``identify(scope)``'s window; it runs
    after authentication, so ``identify`` sees the verified principal in ``scope["user"]``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: FixedWindowLimiter,
        identify: Callable[[Scope], str],
        exclude: tuple[str, ...],
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.identify = identify
        self.exclude = exclude

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exclude):
            await self.app(scope, receive, send)
            return
        allowed, remaining, reset = self.limiter.take(self.identify(scope), time.monotonic())
        headers = {
            "X-RateLimit-Limit": str(self.limiter.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
        }
        if not allowed:
            raise TooManyRequestsException(
                f"More than {self.limiter.limit} requests in a minute for this key",
                headers={**headers, "Retry-After": str(reset)},
            )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                mutable = MutableScopeHeaders.from_message(message)
                for name, value in headers.items():
                    mutable[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
