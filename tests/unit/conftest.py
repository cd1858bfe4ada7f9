"""The fast tier: the command path and its process managers on the in-memory event store.

No nats-server and no HTTP server: a ``Stage`` holds a ``MemoryEventStore`` (proven to answer
like JetStream by tests/test_event_store_contract.py), in-memory idempotency records, the real
``CommandService`` and every projection on an in-memory SQLite database, caught up on demand as
the projectors would be. Stories read: given events, when a command (or a timer), then events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.envelope import RecordedEvent
from adapters.idempotency import MemoryIdempotencyRecords
from adapters.memory_store import MemoryEventStore
from adapters.sql import create_engine, session_factory
from domain.base import Aggregate, Event
from handlers.commands import CommandService
from projections.base import apply_batch, create_tables, read_checkpoint
from slices.catalogue import CATALOGUE


@dataclass
class Stage:
    store: MemoryEventStore
    idempotency: MemoryIdempotencyRecords
    commands: CommandService
    sessions: async_sessionmaker[AsyncSession]

    async def given(
        self,
        aggregate: Aggregate[Any],
        aggregate_id: str,
        *events: Event,
        at: datetime | None = None,
    ) -> int:
        """Record events as having happened (at ``at``), and let every projection see them."""
        history = await self.store.history(aggregate.name, aggregate_id)
        version = history[-1].seq if history else 0
        result = await self.store.append(
            aggregate.name, aggregate_id, list(events), version, occurred_at=at
        )
        await self.project()
        return result.last_seq

    async def project(self) -> None:
        """Apply every event not yet applied, a page at a time, as the projectors do."""
        for projection in CATALOGUE.projections:
            seq = await read_checkpoint(self.sessions, projection.name) + 1
            while page := (await self.store.read_page(projection.subject_filter, seq))[0]:
                await apply_batch(self.sessions, projection, page)
                seq = page[-1].seq + 1

    async def recorded(self, aggregate: Aggregate[Any], aggregate_id: str) -> list[str]:
        return [e.type for e in await self.store.history(aggregate.name, aggregate_id)]

    async def since(self, seq: int) -> list[RecordedEvent]:
        return await self.store.read_subject("ev.>", from_seq=seq + 1)


@pytest.fixture
async def stage() -> AsyncIterator[Stage]:
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    await create_tables(engine)
    store = MemoryEventStore(CATALOGUE.aggregates)
    idempotency = MemoryIdempotencyRecords()
    yield Stage(store, idempotency, CommandService(store, idempotency), session_factory(engine))
    await engine.dispose()
