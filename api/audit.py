"""GET /api/v1/audit/...: the event log's own answers (history, state as of, filtered listing).

The same queries as the ``jetflow events`` command line, served from ``handlers.audit``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, get
from litestar.params import FromPath, QueryParameter

from adapters.live_feed import FeedFilter
from api.answers import Answer, Instant
from api.dependencies import Store
from api.errors import ApiError
from api.events import AggregateId, AggregateName, EventType
from api.http import ADMIN, MAX_SEQ, path_id
from handlers.audit import EventQuery, audit_aggregate, find_events

Seq = Annotated[int | None, QueryParameter(ge=1, le=MAX_SEQ, required=False)]
# Times must say their zone: a naive one has no defined order against the events' UTC times.
Moment = Annotated[
    datetime | None,
    QueryParameter(required=False, description="an ISO 8601 time with its zone (Z or ±hh:mm)"),
]


def zoned(name: str, value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ApiError(422, "time_without_zone", f"{name} must carry its time zone (Z or ±hh:mm)")
    return value


class EventView(Answer):
    """One recorded event, as the stream holds it (``payload`` in the event type's latest
    schema version)."""

    seq: int
    event_id: str
    type: str
    schema_version: int
    aggregate: str
    aggregate_id: str
    occurred_at: Instant
    actor: str
    correlation_id: str | None
    causation_id: str | None
    payload: dict[str, Any]


class EventPage(Answer):
    events: list[EventView]
    count: int
    next_from_seq: int | None


class AggregateHistory(Answer):
    """An aggregate's events and its state after the last of them (as of the bound asked)."""

    aggregate: str
    aggregate_id: str
    version: int
    event_count: int
    state: Any
    events: list[EventView]


class AuditController(Controller):
    path = "/audit"
    tags = ["audit"]

    @get(
        "/events", opt=ADMIN, summary="Recorded events filtered by aggregate, type, actor and time"
    )
    async def list_events(
        self,
        store: Store,
        aggregate: AggregateName = None,
        aggregate_id: AggregateId = None,
        event_type: EventType = None,
        actor: Annotated[str | None, QueryParameter(max_length=256, required=False)] = None,
        since: Moment = None,
        until: Moment = None,
        from_seq: Annotated[int, QueryParameter(ge=1, le=MAX_SEQ)] = 1,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> EventPage:
        query = EventQuery(
            FeedFilter(aggregate, aggregate_id, event_type),
            actor,
            zoned("since", since),
            zoned("until", until),
            from_seq,
        )
        events = [EventView.model_validate(e) async for e in find_events(store, query, limit)]
        next_seq = events[-1].seq + 1 if len(events) == limit else None
        return EventPage(events=events, count=len(events), next_from_seq=next_seq)

    @get(
        "/{aggregate:str}/{aggregate_id:str}",
        opt=ADMIN,
        summary="One aggregate's full history and its state, now or as of a sequence or time",
    )
    async def aggregate_history(
        self,
        store: Store,
        aggregate: FromPath[str],
        aggregate_id: FromPath[str],
        as_of_seq: Seq = None,
        as_of_time: Moment = None,
    ) -> AggregateHistory:
        audit = await audit_aggregate(
            store,
            path_id(aggregate),
            path_id(aggregate_id),
            as_of_seq=as_of_seq,
            as_of_time=zoned("as_of_time", as_of_time),
        )
        return AggregateHistory.model_validate(audit.as_dict())


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (AuditController,)
