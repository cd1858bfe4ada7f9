"""Audit queries over the event log itself: who did what, when, and what state it left behind.

These read JetStream, not the projections: an audit answers from the source of truth, and
"state as of" is the aggregate's own fold of its events up to a sequence or an instant, the same
fold the command side uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pydantic_core

from adapters.envelope import RecordedEvent, aggregate_filter, to_domain
from adapters.live_feed import FeedFilter
from domain.base import NotFound
from handlers.ports import EventStore


@dataclass(frozen=True)
class EventQuery:
    """Which recorded events to list; every condition given must hold."""

    wanted: FeedFilter = field(default_factory=FeedFilter)
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    from_seq: int = 1
    to_seq: int | None = None

    def matches(self, event: RecordedEvent) -> bool:
        return (
            (self.actor is None or event.actor == self.actor)
            and (self.since is None or event.occurred_at >= self.since)
            and (self.until is None or event.occurred_at <= self.until)
        )


async def find_events(
    store: EventStore, query: EventQuery, limit: int | None = None
) -> AsyncIterator[RecordedEvent]:
    """Matching events in stream order, read a page at a time (batched direct gets)."""
    seq, found = query.from_seq, 0
    subject = query.wanted.subject()
    while limit is None or found < limit:
        page, _ = await store.read_page(subject, seq)
        if not page:
            return
        for event in page:
            if query.to_seq is not None and event.seq > query.to_seq:
                return
            if query.matches(event):
                yield event
                found += 1
                if limit is not None and found >= limit:
                    return
        seq = page[-1].seq + 1


@dataclass(frozen=True)
class AggregateAudit:
    aggregate: str
    aggregate_id: str
    events: list[RecordedEvent]
    state: Any
    version: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "aggregate": self.aggregate,
            "aggregate_id": self.aggregate_id,
            "version": self.version,
            "event_count": len(self.events),
            "state": pydantic_core.to_jsonable_python(self.state, fallback=str),
            "events": [e.as_dict() for e in self.events],
        }


async def audit_aggregate(
    store: EventStore,
    aggregate_name: str,
    aggregate_id: str,
    *,
    as_of_seq: int | None = None,
    as_of_time: datetime | None = None,
) -> AggregateAudit:
    """One aggregate's history and its state after the last event at or before the bound."""
    aggregate = store.aggregates.get(aggregate_name)
    if aggregate is None:
        raise NotFound("unknown_aggregate", f"There is no aggregate type {aggregate_name!r}")
    history = [
        e
        for e in await store.read_subject(aggregate_filter(aggregate_name, aggregate_id))
        if (as_of_seq is None or e.seq <= as_of_seq)
        and (as_of_time is None or e.occurred_at <= as_of_time)
    ]
    if not history:
        raise NotFound(
            "aggregate_not_found",
            f"{aggregate_name} {aggregate_id} has no events"
            + (" at that point" if as_of_seq or as_of_time else ""),
        )
    state = aggregate.fold([to_domain(aggregate, e) for e in history])
    return AggregateAudit(aggregate_name, aggregate_id, history, state, history[-1].seq)
