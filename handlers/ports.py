"""What the command path needs from storage, so it can run on JetStream or in memory alike.

The command path, the repository, audits and live-feed ownership are written against these
protocols; ``adapters.event_store`` (JetStream) and ``adapters.memory_store`` implement the event
store, ``adapters.idempotency`` the remembered answers. The refusals belong to the port: the
command path retries on ``ConcurrencyConflict`` whichever store raised it.

The contract, checked against both stores by ``tests/test_event_store_contract.py``:

- Every event gets the next number of one global sequence; subjects are
  ``ev.<aggregate>.<id>.<EventType>`` and filters match them token by token (``*`` one token,
  ``>`` the rest).
- An aggregate's version is the sequence of its last event (0: none yet). ``append`` states the
  version it decided on and is refused with ``ConcurrencyConflict`` when the aggregate moved.
- The events of one ``append`` are stored all or none, with consecutive sequences.
- An idempotency key seen within the duplicate window stores nothing: a single event answers the
  first append's sequence with ``duplicate`` set (after the version check), several events are
  refused with ``DuplicateAppend`` (before it). ``appended`` answers where in an aggregate's
  history the append made with a key was stored, and only reads.
- An append that finds no room is refused with ``StoreFull`` and stores nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from adapters.envelope import Metadata, RecordedEvent
from domain.base import Aggregate, AggregateIndex, Event
from handlers.outcome import CommandOutcome

S = TypeVar("S")


class EventStoreError(RuntimeError):
    """The store refused an append for a reason other than concurrency or duplication."""


class ConcurrencyConflict(EventStoreError):
    """Another writer appended to the aggregate since its state was loaded."""


class EventTooLarge(EventStoreError):
    """An event is larger than the store takes in one message: big bytes go to the blob store."""


class DuplicateAppend(EventStoreError):
    """The idempotency key was used before; the first append stands."""


class StoreFull(EventStoreError):
    """The store has no room for the write (a server, account or stream storage limit, or a full
    disk); nothing was stored. Space comes back only when an operator frees or adds it."""


@dataclass(frozen=True)
class AppendResult:
    first_seq: int
    last_seq: int
    duplicate: bool = False


class EventStore(Protocol):
    @property
    def stream(self) -> str: ...

    @property
    def aggregates(self) -> AggregateIndex:
        """The aggregates whose events this store decodes (and upcasts): the catalogue's."""

    async def last_seq(self) -> int:
        """The sequence of the newest event in the store (0 when it is empty)."""

    async def append(
        self,
        aggregate: str,
        aggregate_id: str,
        events: Sequence[Event],
        expected_version: int,
        *,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
        occurred_at: datetime | None = None,
    ) -> AppendResult: ...

    async def appended(
        self, aggregate: str, aggregate_id: str, idempotency_key: str
    ) -> AppendResult | None:
        """Where in this aggregate's history the append made with ``idempotency_key`` was
        stored (``duplicate`` set): the log's own answer when a remembered one is missing. Only
        reads."""

    async def read_subject(self, subject_filter: str, from_seq: int = 1) -> list[RecordedEvent]:
        """Every event matching ``subject_filter`` from ``from_seq`` on, in sequence order."""

    async def read_page(self, subject_filter: str, start: int) -> tuple[list[RecordedEvent], int]:
        """Up to 1,000 matching events from ``start`` on, and how many match after them."""

    async def get(self, seq: int) -> RecordedEvent:
        """The event stored at ``seq``; callers ask only for sequences an append answered."""

    async def first(self, subject_filter: str) -> RecordedEvent | None: ...

    async def history(self, aggregate: str, aggregate_id: str) -> list[RecordedEvent]: ...

    async def load(self, aggregate: Aggregate[S], aggregate_id: str) -> tuple[S, int]:
        """An aggregate's state folded from its events, and its version."""


class IdempotencyRecords(Protocol):
    """The first answer to each command sent with an idempotency key, handed back on resends."""

    async def get(self, scope: str, key: str) -> CommandOutcome | None:
        """The remembered answer, marked ``replayed`` and without the decided events."""

    async def put(self, scope: str, key: str, outcome: CommandOutcome) -> None: ...
