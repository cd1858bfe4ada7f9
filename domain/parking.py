"""Parked events: an event a projection could not apply, set aside so the projection goes on.

Parking is a fact like any other, so it is recorded in the event log (one instance per
projection and stream sequence, id ``<projection>-<seq>``): it survives restarts, every service
instance sees it, and the ``parked_events`` read model lists it. An operator resolves a parked
event by retrying it (the projection applied it after all) or skipping it (never applied).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from domain.base import Aggregate, Command, Event, Instant, Invalid, NotFound, StateConflict

# Error texts come from exceptions raised by a projection's apply; bounded so an event stays small.
MAX_ERROR_CHARS = 2000
ProjectionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$")]
Seq = Annotated[int, Field(ge=1, le=2**63 - 1)]


def parked_id(projection: str, seq: int) -> str:
    """The aggregate id of one parked event: a projection name has no ``-``, so it is unique."""
    return f"{projection}-{seq}"


# ---------------------------------------------------------------- commands


class ParkEvent(Command):
    projection: ProjectionName
    seq: Seq
    event_type: Annotated[str, Field(min_length=1, max_length=128)]
    error: Annotated[str, Field(max_length=MAX_ERROR_CHARS)]
    attempts: Annotated[int, Field(ge=1)]
    at: Instant


class RetryParked(Command):
    """Recorded once the projection has applied the parked event after all."""

    at: Instant


class SkipParked(Command):
    """Resolve a parked event without applying it."""

    at: Instant


# ---------------------------------------------------------------- events


class EventParked(Event):
    projection: str
    seq: int
    event_type: str
    error: str
    attempts: int
    parked_at: datetime


class ParkedEventRetried(Event):
    projection: str
    seq: int
    retried_at: datetime


class ParkedEventSkipped(Event):
    projection: str
    seq: int
    skipped_at: datetime


# ---------------------------------------------------------------- aggregate

Status = Literal["parked", "retried", "skipped"]


@dataclass(frozen=True)
class ParkedState:
    projection: str | None = None
    seq: int = 0
    status: Status | None = None


def decide(state: ParkedState, command: Command) -> list[Event]:
    match command:
        case ParkEvent():
            # Parked already: the runner died between parking and moving its checkpoint on.
            # Resolved before: the projection was rebuilt and the event failed again.
            if state.status == "parked":
                return []
            return [
                EventParked(
                    projection=command.projection,
                    seq=command.seq,
                    event_type=command.event_type,
                    error=command.error,
                    attempts=command.attempts,
                    parked_at=command.at,
                )
            ]
        case RetryParked() | SkipParked():
            if state.status is None or state.projection is None:
                raise NotFound("parked_event_not_found", "No event is parked under this id")
            if state.status != "parked":
                raise StateConflict(
                    "parked_event_resolved",
                    f"Event {state.seq} of projection {state.projection} was already "
                    f"{state.status}",
                )
            if isinstance(command, RetryParked):
                return [
                    ParkedEventRetried(
                        projection=state.projection, seq=state.seq, retried_at=command.at
                    )
                ]
            return [
                ParkedEventSkipped(
                    projection=state.projection, seq=state.seq, skipped_at=command.at
                )
            ]
    raise Invalid("unknown_command", f"Parked events do not handle {type(command).__name__}")


def evolve(state: ParkedState, event: Event) -> ParkedState:
    match event:
        case EventParked():
            return ParkedState(projection=event.projection, seq=event.seq, status="parked")
        case ParkedEventRetried():
            return ParkedState(projection=event.projection, seq=event.seq, status="retried")
        case ParkedEventSkipped():
            return ParkedState(projection=event.projection, seq=event.seq, status="skipped")
    return state


PARKING = Aggregate[ParkedState](
    name="parking",
    initial=ParkedState,
    decide=decide,
    evolve=evolve,
    events=(EventParked, ParkedEventRetried, ParkedEventSkipped),
)
