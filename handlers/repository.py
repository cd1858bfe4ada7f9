"""Aggregate states kept between commands, and one writer at a time per aggregate in-process.

A hot aggregate (a render job taking thousands of frame reports) would otherwise be re-read from
its first event for every command and lose most optimistic-concurrency races to its own process.
The cache holds ``(state, version)``; a load reads only the events after ``version`` (another
process may have appended), and the expected-sequence check on append still guards everything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from adapters.envelope import aggregate_filter, to_domain
from domain.base import Aggregate, Event
from handlers.ports import EventStore

Key = tuple[str, str]


class AggregateRepository:
    def __init__(self, store: EventStore, *, max_cached: int = 10_000) -> None:
        self.store = store
        self.max_cached = max_cached
        self._states: OrderedDict[Key, tuple[Any, int]] = OrderedDict()
        self._locks: dict[Key, tuple[asyncio.Lock, int]] = {}

    async def load(self, aggregate: Aggregate[Any], aggregate_id: str) -> tuple[Any, int]:
        key = (aggregate.name, aggregate_id)
        state, version = self._states.get(key, (None, 0))
        newer = await self.store.read_subject(
            aggregate_filter(aggregate.name, aggregate_id), from_seq=version + 1
        )
        if newer:
            state = aggregate.fold([to_domain(aggregate, r) for r in newer], state)
            version = newer[-1].seq
            self._remember(key, state, version)
        elif state is None:
            state = aggregate.initial()
        return state, version

    def cached(self, aggregate: Aggregate[Any], aggregate_id: str) -> tuple[Any, int] | None:
        """The last state this process saw, possibly behind the stream: decide on it only
        optimistically (the append's sequence check will tell)."""
        return self._states.get((aggregate.name, aggregate_id))

    def applied(
        self,
        aggregate: Aggregate[Any],
        aggregate_id: str,
        state: Any,
        events: list[Event],
        version: int,
    ) -> None:
        """Record the state after this process appended ``events`` ending at ``version``."""
        self._remember((aggregate.name, aggregate_id), aggregate.fold(events, state), version)

    def _remember(self, key: Key, state: Any, version: int) -> None:
        self._states[key] = (state, version)
        self._states.move_to_end(key)
        while len(self._states) > self.max_cached:
            self._states.popitem(last=False)

    @contextlib.asynccontextmanager
    async def exclusive(self, aggregate: Aggregate[Any], aggregate_id: str) -> AsyncIterator[None]:
        """Serialise this process's commands on one aggregate instance."""
        key = (aggregate.name, aggregate_id)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
