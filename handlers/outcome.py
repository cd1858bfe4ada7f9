"""The command path's answer, shared by every edge that reports a write (HTTP, NATS, timers)."""

from __future__ import annotations

from dataclasses import dataclass, field

from domain.base import Event


@dataclass(frozen=True)
class CommandOutcome:
    """What a write answers: where its events went and the sequence a reader can wait for."""

    aggregate: str
    aggregate_id: str
    first_seq: int
    last_seq: int
    events: tuple[str, ...]
    replayed: bool = False
    # The decided events themselves, for the caller that just appended them; not remembered.
    decided: tuple[Event, ...] = field(default=(), compare=False, repr=False)
