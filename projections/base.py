"""What a projection is, and the one way events are applied to it.

A projection reads the events of one aggregate (its subject filter is derived from the
aggregate's name) and owns some tables. ``apply_batch`` applies a run of events and
stores the last applied stream sequence in the same transaction as the rows: a redelivered or
replayed event at or below the checkpoint is skipped, so a crash anywhere never double-applies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import BigInteger, Column, MetaData, String, Table, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adapters.envelope import RecordedEvent, events_of
from adapters.sql import insert_ignoring
from domain.base import Aggregate

metadata = MetaData()

checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

Applier = Callable[[AsyncSession, Sequence[RecordedEvent]], Awaitable[None]]
# What the runner does with an event that keeps failing (``handlers.projector``): set it aside
# and go on (``park``), or stop the projection loudly (``halt``) where a gap is worse than a stop.
FailurePolicy = Literal["park", "halt"]


@dataclass(frozen=True)
class Projection:
    name: str
    source: Aggregate[Any]
    tables: tuple[Table, ...]
    apply: Applier
    on_failure: FailurePolicy = "park"

    @property
    def subject_filter(self) -> str:
        return events_of(self.source)


async def create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


async def reset(engine: AsyncEngine, projection: Projection) -> None:
    """Drop and recreate a projection's tables and forget its checkpoint (used by replay)."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all, tables=[checkpoints])
        await conn.run_sync(metadata.drop_all, tables=list(projection.tables))
        await conn.run_sync(metadata.create_all, tables=list(projection.tables))
        await conn.execute(checkpoints.delete().where(checkpoints.c.name == projection.name))


async def checkpoint(session: AsyncSession, name: str, *, lock: bool = False) -> int:
    query = select(checkpoints.c.seq).where(checkpoints.c.name == name)
    seq = await session.scalar(query.with_for_update() if lock else query)
    return int(seq or 0)


async def read_checkpoint(sessions: async_sessionmaker[AsyncSession], name: str) -> int:
    async with sessions() as session:
        return await checkpoint(session, name)


async def apply_alone(
    sessions: async_sessionmaker[AsyncSession], projection: Projection, event: RecordedEvent
) -> None:
    """Apply one event the checkpoint has already passed (a parked event being retried), in
    its own transaction; the checkpoint stays where it is."""
    async with sessions() as session, session.begin():
        await projection.apply(session, [event])


async def pass_event(
    sessions: async_sessionmaker[AsyncSession], projection: Projection, seq: int
) -> int:
    """Move the checkpoint on to ``seq`` without applying it (it was parked); return it."""
    async with sessions() as session, session.begin():
        applied = await checkpoint(session, projection.name, lock=True)
        if seq <= applied:
            return applied
        if applied == 0:
            await session.execute(
                insert_ignoring(session, checkpoints, {"name": projection.name, "seq": 0})
            )
        await session.execute(
            update(checkpoints).where(checkpoints.c.name == projection.name).values(seq=seq)
        )
        return seq


async def apply_batch(
    sessions: async_sessionmaker[AsyncSession],
    projection: Projection,
    events: Sequence[RecordedEvent],
) -> int:
    """Apply the events newer than the checkpoint in one transaction; return the checkpoint."""
    async with sessions() as session, session.begin():
        applied = await checkpoint(session, projection.name, lock=True)
        fresh = [e for e in events if e.seq > applied]
        if not fresh:
            return applied
        await projection.apply(session, fresh)
        last = fresh[-1].seq
        if applied == 0:
            await session.execute(
                insert_ignoring(session, checkpoints, {"name": projection.name, "seq": 0})
            )
        await session.execute(
            update(checkpoints).where(checkpoints.c.name == projection.name).values(seq=last)
        )
        return last
