"""The wire form of an event: the domain fact wrapped with who, when, why and where it belongs.

One JSON object per JetStream message. The payload is the event's own fields; everything needed to
route or audit it without knowing the payload sits beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pydantic_core
from uuid6 import uuid7

from adapters.tracing import TRACEPARENT
from domain.base import Aggregate, AggregateIndex, Event

# The header JetStream deduplicates appends by; a keyed command's events carry its key there.
MSG_ID = "Nats-Msg-Id"

SUBJECT_PREFIX = "ev"


@dataclass(frozen=True)
class Metadata:
    """Why an event was recorded: the command's actor and its causation/correlation chain."""

    actor: str = "system"
    correlation_id: str | None = None
    causation_id: str | None = None


@dataclass(frozen=True)
class RecordedEvent:
    """An event as read back from the stream, with the sequence that orders it globally."""

    seq: int
    event_id: str
    type: str
    schema_version: int
    aggregate: str
    aggregate_id: str
    occurred_at: datetime
    actor: str
    correlation_id: str | None
    causation_id: str | None
    payload: dict[str, Any]
    # The W3C trace context of the append that recorded it, from the message's headers (never
    # the payload; None when tracing was off): where a projection or webhook continues the trace.
    traceparent: str | None = None
    # The ``Nats-Msg-Id`` it was appended under (a keyed command's), from the headers too.
    msg_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "type": self.type,
            "schema_version": self.schema_version,
            "aggregate": self.aggregate,
            "aggregate_id": self.aggregate_id,
            "occurred_at": self.occurred_at.isoformat(),
            "actor": self.actor,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "payload": self.payload,
        }


def subject_for(aggregate: str, aggregate_id: str, event_type: str) -> str:
    return f"{SUBJECT_PREFIX}.{aggregate}.{aggregate_id}.{event_type}"


def aggregate_filter(aggregate: str, aggregate_id: str) -> str:
    """The subject filter covering every event of one aggregate instance."""
    return f"{SUBJECT_PREFIX}.{aggregate}.{aggregate_id}.*"


def events_of(aggregate: Aggregate[Any], event_type: type[Event] | None = None) -> str:
    """The subject filter of every event of one kind of aggregate, or of one of its event types:
    readers derive their filters from the domain, so a renamed aggregate cannot leave one behind.
    """
    if event_type is None:
        return f"{SUBJECT_PREFIX}.{aggregate.name}.>"
    aggregate.event_type(event_type.type_name())  # refuses a type the aggregate does not record
    return f"{SUBJECT_PREFIX}.{aggregate.name}.*.{event_type.type_name()}"


ALL_EVENTS = f"{SUBJECT_PREFIX}.>"


def encode(
    aggregate: str,
    aggregate_id: str,
    event: Event,
    metadata: Metadata,
    occurred_at: datetime | None = None,
) -> bytes:
    return pydantic_core.to_json(
        {
            "event_id": str(uuid7()),
            "type": event.type_name(),
            "schema_version": event.schema_version,
            "aggregate": aggregate,
            "aggregate_id": aggregate_id,
            "occurred_at": occurred_at or datetime.now(UTC),
            "actor": metadata.actor,
            "correlation_id": metadata.correlation_id,
            "causation_id": metadata.causation_id,
            "payload": event,
        }
    )


class EventCodec:
    """Reads messages back into ``RecordedEvent``s, upcasting payloads of older schema versions.

    It knows the aggregates it was given (the catalogue's), and only those: an event of an
    aggregate or type it does not know (written by a newer release) is left as recorded.
    """

    def __init__(self, aggregates: AggregateIndex) -> None:
        self.aggregates = aggregates

    def decode(
        self, seq: int, data: bytes, headers: Mapping[str, str] | None = None
    ) -> RecordedEvent:
        raw = pydantic_core.from_json(data)
        version, payload = self._current(
            raw["aggregate"], raw["type"], raw["schema_version"], raw["payload"]
        )
        return RecordedEvent(
            seq=seq,
            event_id=raw["event_id"],
            type=raw["type"],
            schema_version=version,
            aggregate=raw["aggregate"],
            aggregate_id=raw["aggregate_id"],
            occurred_at=datetime.fromisoformat(raw["occurred_at"]),
            actor=raw["actor"],
            correlation_id=raw["correlation_id"],
            causation_id=raw["causation_id"],
            payload=payload,
            traceparent=headers.get(TRACEPARENT) if headers else None,
            msg_id=headers.get(MSG_ID) if headers else None,
        )

    def _current(
        self, aggregate_name: str, type_name: str, version: int, payload: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        aggregate = self.aggregates.get(aggregate_name)
        if aggregate is None:
            return version, payload
        try:
            event_type = aggregate.event_type(type_name)
        except KeyError:  # written by a newer release than this reader: leave it as recorded
            return version, payload
        if version >= event_type.schema_version:
            return version, payload
        return event_type.schema_version, event_type.upcast(payload, version)


def to_domain(aggregate: Aggregate[Any], recorded: RecordedEvent) -> Event:
    return aggregate.event_type(recorded.type).model_validate(recorded.payload)
