"""Use cases of parked events: park one (the projection runner), list, retry and skip them (the
admin routes and ``jetflow parked``).

Retry applies the parked event alone through its projection's apply, in a transaction of its
own that leaves the checkpoint where it is, and records the retry only once that committed: a
retry that fails again changes nothing. Alone, not with the instance's later events again:
those were applied already, and applies that count (``+ 1``) would count them twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.envelope import Metadata, RecordedEvent
from domain.base import StateConflict
from domain.parking import (
    MAX_ERROR_CHARS,
    PARKING,
    ParkEvent,
    RetryParked,
    SkipParked,
    parked_id,
)
from handlers.commands import CommandContext, CommandService
from handlers.outcome import CommandOutcome
from handlers.ports import EventStore
from projections.base import Projection, apply_alone
from projections.parking import parked_events


@dataclass(frozen=True)
class ParkedEvent:
    projection: str
    seq: int
    event_type: str
    error: str
    attempts: int
    status: str
    parked_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None


def error_text(error: BaseException) -> str:
    """What is recorded of the failure: its type and message, bounded."""
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


async def park_event(
    commands: CommandService,
    projection: Projection,
    event: RecordedEvent,
    error: BaseException,
    attempts: int,
) -> None:
    command = ParkEvent(
        projection=projection.name,
        seq=event.seq,
        event_type=event.type,
        error=error_text(error),
        attempts=attempts,
        at=datetime.now(UTC),
    )
    context = CommandContext(Metadata(actor=f"system:projection:{projection.name}"))
    await commands.execute(PARKING, parked_id(projection.name, event.seq), command, context)


async def list_parked(
    sessions: async_sessionmaker[AsyncSession], *, include_resolved: bool = False
) -> list[ParkedEvent]:
    query = select(parked_events).order_by(parked_events.c.projection, parked_events.c.seq)
    if not include_resolved:
        query = query.where(parked_events.c.status == "parked")
    async with sessions() as session:
        rows = (await session.execute(query)).mappings().all()
    return [ParkedEvent(**{k: v for k, v in row.items() if k != "last_seq"}) for row in rows]


async def parked_counts(session: AsyncSession) -> dict[str, int]:
    """Events still parked, per projection (none listed: nothing parked)."""
    rows = await session.execute(
        select(parked_events.c.projection, func.count())
        .where(parked_events.c.status == "parked")
        .group_by(parked_events.c.projection)
    )
    return {name: int(count) for name, count in rows.all()}


async def retry_parked(
    store: EventStore,
    commands: CommandService,
    sessions: async_sessionmaker[AsyncSession],
    projections: dict[str, Projection],
    projection_name: str,
    seq: int,
    actor: str,
) -> CommandOutcome:
    """Apply the parked event and record it retried."""
    aggregate_id = parked_id(projection_name, seq)
    state, _ = await store.load(PARKING, aggregate_id)
    command = RetryParked(at=datetime.now(UTC))
    PARKING.decide(state, command)  # refuses an unknown or resolved event before applying it
    projection = projections.get(projection_name)
    if projection is None:
        raise StateConflict(
            "projection_not_served", f"This service does not run projection {projection_name}"
        )
    event = await store.get(seq)
    try:
        await apply_alone(sessions, projection, event)
    except Exception as failure:  # whatever the projection's apply raises, as when it parked
        raise StateConflict(
            "parked_event_still_failing",
            f"Event {seq} still fails in projection {projection_name}: {error_text(failure)}",
        ) from failure
    context = CommandContext(Metadata(actor=actor))
    return await commands.execute(PARKING, aggregate_id, command, context)


async def skip_parked(
    commands: CommandService, projection_name: str, seq: int, actor: str
) -> CommandOutcome:
    context = CommandContext(Metadata(actor=actor))
    command = SkipParked(at=datetime.now(UTC))
    return await commands.execute(PARKING, parked_id(projection_name, seq), command, context)
