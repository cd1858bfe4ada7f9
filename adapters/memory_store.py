"""The event store port in memory, for the fast test tier: no nats-server, same answers.

It keeps what the JetStream stream keeps (one global sequence of encoded messages, each on its
``ev.<aggregate>.<id>.<EventType>`` subject) and refuses what the server refuses, in the order
the server checks: a single event meets the expected-version guard before ``Nats-Msg-Id``
de-duplication, a batch meets de-duplication first (both orders observed on nats-server 2.15).
Messages are stored as ``adapters.envelope`` encodes them and decoded on every read, so upcasting
and the envelope's fields are exercised as on the real stream.

Laid out like an in-memory recorder (the eventsourcing library's POPO recorder): one list of
records in sequence order plus the indexes a write must check, every check made before anything
is stored. Each call yields to the event loop once, as a network round trip would, so concurrent
callers interleave and race the way they do against the server.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from adapters.envelope import (
    MSG_ID,
    EventCodec,
    Metadata,
    RecordedEvent,
    aggregate_filter,
    encode,
    subject_for,
    to_domain,
)
from adapters.event_store import StreamSettings, keyed_append, msg_id
from domain.base import Aggregate, AggregateIndex, Event
from handlers.ports import (
    AppendResult,
    ConcurrencyConflict,
    DuplicateAppend,
    EventStoreError,
    EventTooLarge,
)

S = TypeVar("S")

READ_PAGE = 1000  # events per direct-get batch, as the JetStream store asks for
MAX_BATCH = 1000  # nats-server's default limit on the messages of one atomic batch


@dataclass(frozen=True)
class _Message:
    subject: tuple[str, ...]  # split into tokens once, for filter matching
    data: bytes
    headers: dict[str, str]  # the Nats-Msg-Id of a keyed append's events


class MemoryEventStore:
    def __init__(self, aggregates: AggregateIndex, settings: StreamSettings | None = None) -> None:
        self.codec = EventCodec(aggregates)
        self.settings = settings or StreamSettings()
        self._messages: list[_Message] = []
        # The expected-version guard: the sequence of each aggregate instance's last event.
        self._versions: dict[tuple[str, str], int] = {}
        # Nats-Msg-Id → (sequence, when stored), oldest first, forgotten after the window.
        self._msg_ids: OrderedDict[str, tuple[int, float]] = OrderedDict()

    @property
    def stream(self) -> str:
        return self.settings.name

    @property
    def aggregates(self) -> AggregateIndex:
        return self.codec.aggregates

    async def last_seq(self) -> int:
        await asyncio.sleep(0)
        return len(self._messages)

    # ------------------------------------------------------------------ append

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
    ) -> AppendResult:
        if not events:
            raise ValueError("append needs at least one event")
        meta = metadata or Metadata()
        messages = [
            (
                subject_for(aggregate, aggregate_id, event.type_name()),
                encode(aggregate, aggregate_id, event, meta, occurred_at),
            )
            for event in events
        ]
        await asyncio.sleep(0)
        # From here to the end nothing awaits: the checks and the write are one step.
        self._forget_old_msg_ids()
        self._check_size(messages)
        if len(messages) == 1:
            msg_ids = [msg_id(idempotency_key, 1)] if idempotency_key else []
            self._check_version(aggregate, aggregate_id, expected_version)
            if msg_ids and (seen := self._msg_ids.get(msg_ids[0])) is not None:
                return AppendResult(seen[0], seen[0], duplicate=True)
        else:
            count = len(messages)
            if count > MAX_BATCH:
                raise EventStoreError(f"atomic publish batch is too large: {MAX_BATCH}")
            msg_ids = (
                [msg_id(idempotency_key, i) for i in range(1, count + 1)] if idempotency_key else []
            )
            if any(known in self._msg_ids for known in msg_ids):
                raise DuplicateAppend("atomic publish batch contains duplicate message id")
            self._check_version(aggregate, aggregate_id, expected_version)
        first = len(self._messages) + 1
        now = time.monotonic()
        for index, (subject, data) in enumerate(messages):
            headers = {MSG_ID: msg_ids[index]} if msg_ids else {}
            self._messages.append(_Message(tuple(subject.split(".")), data, headers))
        for seq, stored in enumerate(msg_ids, start=first):
            self._msg_ids[stored] = (seq, now)
        self._versions[(aggregate, aggregate_id)] = len(self._messages)
        return AppendResult(first, len(self._messages))

    async def appended(
        self, aggregate: str, aggregate_id: str, idempotency_key: str
    ) -> AppendResult | None:
        return keyed_append(await self.history(aggregate, aggregate_id), idempotency_key)

    def _check_size(self, messages: list[tuple[str, bytes]]) -> None:
        if any(len(data) > self.settings.max_msg_size for _, data in messages):
            raise EventTooLarge("message size exceeds maximum allowed")

    def _check_version(self, aggregate: str, aggregate_id: str, expected: int) -> None:
        actual = self._versions.get((aggregate, aggregate_id), 0)
        if actual != expected:
            raise ConcurrencyConflict(f"wrong last sequence: {actual}")

    def _forget_old_msg_ids(self) -> None:
        horizon = time.monotonic() - self.settings.duplicate_window_s
        while self._msg_ids and next(iter(self._msg_ids.values()))[1] < horizon:
            self._msg_ids.popitem(last=False)

    # ------------------------------------------------------------------ read

    async def read_subject(self, subject_filter: str, from_seq: int = 1) -> list[RecordedEvent]:
        await asyncio.sleep(0)
        return [
            self.codec.decode(seq, m.data, m.headers)
            for seq, m in self._matching(subject_filter, from_seq)
        ]

    async def read_page(self, subject_filter: str, start: int) -> tuple[list[RecordedEvent], int]:
        await asyncio.sleep(0)
        page: list[RecordedEvent] = []
        pending = 0
        for seq, message in self._matching(subject_filter, start):
            if len(page) < READ_PAGE:
                page.append(self.codec.decode(seq, message.data, message.headers))
            else:
                pending += 1
        return page, pending

    async def get(self, seq: int) -> RecordedEvent:
        await asyncio.sleep(0)
        if not 1 <= seq <= len(self._messages):
            raise LookupError(f"{self.stream} holds no event at sequence {seq}")
        stored = self._messages[seq - 1]
        return self.codec.decode(seq, stored.data, stored.headers)

    async def first(self, subject_filter: str) -> RecordedEvent | None:
        await asyncio.sleep(0)
        found = next(self._matching(subject_filter, 1), None)
        return self.codec.decode(found[0], found[1].data, found[1].headers) if found else None

    async def history(self, aggregate: str, aggregate_id: str) -> list[RecordedEvent]:
        return await self.read_subject(aggregate_filter(aggregate, aggregate_id))

    async def load(self, aggregate: Aggregate[S], aggregate_id: str) -> tuple[S, int]:
        recorded = await self.history(aggregate.name, aggregate_id)
        state = aggregate.fold([to_domain(aggregate, r) for r in recorded])
        return state, recorded[-1].seq if recorded else 0

    def _matching(self, subject_filter: str, from_seq: int) -> Iterator[tuple[int, _Message]]:
        wanted = subject_filter.split(".")
        for index in range(max(from_seq, 1) - 1, len(self._messages)):
            message = self._messages[index]
            if subject_matches(wanted, message.subject):
                yield index + 1, message


def subject_matches(wanted: list[str], subject: tuple[str, ...]) -> bool:
    """NATS filter matching: ``*`` is any one token, a final ``>`` one or more tokens."""
    for position, token in enumerate(wanted):
        if token == ">":
            return len(subject) > position
        if position >= len(subject) or token not in ("*", subject[position]):
            return False
    return len(subject) == len(wanted)
