"""Per-key rate limiting with the seed's X-RateLimit-* headers.

Hand-written instead of Litestar's ``RateLimitMiddleware``: that one keeps a timestamp per
request for the whole window and JSON-encodes the list through its store on every request, so a
request costs more the more came before it in the minute (py-spy: 15-20 % of the service's
samples under load, and 400 instead of 730 POST/s; see bench/results.md). A fixed window with a
counter per key costs the same for every request. The state is per process, like the store
Litestar's middleware used by default.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import TooManyRequestsException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

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


class RateLimitMiddleware:
    """ASGI middleware: counts each HTTP request against ``identify(scope)``'s window."""

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
                headers=headers,
            )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                mutable = MutableScopeHeaders.from_message(message)
                for name, value in headers.items():
                    mutable[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
