"""Read model of parked events: what `/api/v1/parked`, `jetflow parked list`, health and the
metrics read. Its own events are never parked (``on_failure="halt"``): parking one of them would
need this very projection to record it."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text, update
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.envelope import RecordedEvent
from adapters.sql import insert_ignoring
from domain.parking import PARKING
from projections.base import Projection, metadata

parked_events = Table(
    "parked_events",
    metadata,
    Column("projection", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("event_type", String(128), nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    # parked, retried or skipped (``domain.parking``)
    Column("status", String(16), nullable=False),
    Column("parked_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolved_by", String(256)),
    Column("last_seq", BigInteger, nullable=False),
    Index("ix_parked_events_status", "status", "projection"),
)


async def apply_parking_events(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
    for event in events:
        p = event.payload
        key = (parked_events.c.projection == p["projection"]) & (parked_events.c.seq == p["seq"])
        match event.type:
            case "EventParked":
                row = {
                    "event_type": p["event_type"],
                    "error": p["error"],
                    "attempts": p["attempts"],
                    "status": "parked",
                    "parked_at": event.occurred_at,
                    "resolved_at": None,
                    "resolved_by": None,
                    "last_seq": event.seq,
                }
                # Parked again after a rebuild resolved it once: the row starts over.
                keys = {"projection": p["projection"], "seq": p["seq"]}
                await session.execute(insert_ignoring(session, parked_events, {**keys, **row}))
                await session.execute(update(parked_events).where(key).values(**row))
            case "ParkedEventRetried" | "ParkedEventSkipped":
                status = "retried" if event.type == "ParkedEventRetried" else "skipped"
                await session.execute(
                    update(parked_events)
                    .where(key)
                    .values(
                        status=status,
                        resolved_at=event.occurred_at,
                        resolved_by=event.actor,
                        last_seq=event.seq,
                    )
                )


PARKED = Projection(
    name="parked",
    source=PARKING,
    tables=(parked_events,),
    apply=apply_parking_events,
    on_failure="halt",
)
