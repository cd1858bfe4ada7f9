"""What the worker, the render nodes and the deploy agent share: the one rule for calling the API,
and a loop that polls it until it is told to stop.

The clients are separate processes that must outlive the service's bad moments: a rate limit
(429), a broker outage or a restarting service (503, or 502/504 from a proxy in front) and a
refused or broken connection are waited out, with exponential backoff and jitter, for as long
as it takes, each retry logged at WARNING. Only a stop ends the wait. Every call carries one
``Idempotency-Key`` for all its attempts, so a report whose first answer was lost is recorded
once: the resend answers like the first delivery.

SIGINT/SIGTERM lets the current task or deployment finish its report instead of dying between two
HTTP calls (a report still waiting for the API is given up at the stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import httpx

log = logging.getLogger("jetflow.clients")

# Answers that say "not now" rather than "no": nothing was decided, or a resend with the same
# Idempotency-Key tells what was.
RETRIED_STATUSES = frozenset({429, 502, 503, 504})


class Stopped(Exception):
    """The client was told to stop while it waited for the API to take a call."""


@dataclass(frozen=True)
class Backoff:
    """How long to wait before the next attempt: doubling from ``initial_s`` up to ``max_s``,
    each wait drawn from its upper half so that clients refused together do not return
    together. An answer's ``Retry-After`` is waited out first (plus the same jitter); nothing
    waits longer than ``max_s``, so a bogus Retry-After cannot park a node for a day."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"retry waits need 0 < {self.initial_s} <= {self.max_s}")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        step = min(self.max_s, self.initial_s * 2 ** min(attempt, 32))
        jitter = rng.uniform(0, step / 2)
        wait = step / 2 + jitter if retry_after is None else retry_after + jitter
        return min(wait, self.max_s)


def retry_after(answer: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None if absent or unreadable."""
    value = answer.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def api_client(api: str, api_key: str | None, timeout: float) -> httpx.AsyncClient:
    headers = {"X-API-Key": api_key} if api_key else {}
    return httpx.AsyncClient(base_url=f"{api}/api/v1", timeout=timeout, headers=headers)


class ApiCalls:
    """The API as the clients call it: ``post`` waits out what ``RETRIED_STATUSES`` and
    transport errors say is temporary and answers everything else as it came."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        stop: asyncio.Event,
        backoff: Backoff,
        rng: random.Random | None = None,
    ) -> None:
        self.http = http
        self.stop = stop
        self.backoff = backoff
        self.rng = rng or random.Random()

    async def __aenter__(self) -> ApiCalls:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def post(self, path: str, json: Any = None) -> httpx.Response:
        """POST until the API answers something other than "not now"; ``Stopped`` if a stop
        comes first. The log line names the path and the reason, never a header or body."""
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        attempt = 0
        while True:
            try:
                answer = await self.http.post(path, json=json, headers=headers)
            except httpx.UnsupportedProtocol:
                raise  # a --api without http(s)://: no wait will mend it
            except httpx.TransportError as error:
                reason, asked = f"{type(error).__name__}: {error}", None
            else:
                if answer.status_code not in RETRIED_STATUSES:
                    return answer
                reason, asked = f"HTTP {answer.status_code}", retry_after(answer)
            wait = self.backoff.delay(attempt, asked, self.rng)
            attempt += 1
            log.warning("POST %s: %s; retry %d in %.2f s", path, reason, attempt, wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), wait)
            if self.stop.is_set():
                raise Stopped(f"stopped while POST {path} waited for the API")


class PollingClient(ABC):
    def __init__(
        self, api: str, api_key: str | None, *, poll_s: float, backoff: Backoff | None = None
    ) -> None:
        self.api = api.rstrip("/")
        self.api_key = api_key
        self.poll_s = poll_s
        self.backoff = backoff or Backoff()
        self.done = 0
        self._stop = asyncio.Event()

    def client(self, timeout: float) -> ApiCalls:
        """The API, called with this process's key (a worker-role key) under the retry rule;
        a stop interrupts any wait for it."""
        return ApiCalls(api_client(self.api, self.api_key, timeout), self._stop, self.backoff)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def idle(self) -> None:
        """Wait one poll interval, or less if a stop comes first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.poll_s)

    async def run_until_signalled(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        try:
            await self.run()
        except Stopped as stopped:
            log.info("%s", stopped)
        return 0

    @abstractmethod
    async def run(self) -> None: ...
