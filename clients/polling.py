"""What the worker and the deploy agent share: a loop that polls the API until it is told to stop.

Both are separate processes run from the CLI; SIGINT/SIGTERM lets the current task or deployment
finish its report instead of dying between two HTTP calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from abc import ABC, abstractmethod

import httpx


def api_client(api: str, api_key: str | None, timeout: float) -> httpx.AsyncClient:
    headers = {"X-API-Key": api_key} if api_key else {}
    return httpx.AsyncClient(base_url=f"{api}/api/v1", timeout=timeout, headers=headers)


class PollingClient(ABC):
    def __init__(self, api: str, api_key: str | None, *, poll_s: float) -> None:
        self.api = api.rstrip("/")
        self.api_key = api_key
        self.poll_s = poll_s
        self.done = 0
        self._stop = asyncio.Event()

    def client(self, timeout: float) -> httpx.AsyncClient:
        """An HTTP client for the API, sending this process's key (a worker-role key)."""
        return api_client(self.api, self.api_key, timeout)

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
        await self.run()
        return 0

    @abstractmethod
    async def run(self) -> None: ...
