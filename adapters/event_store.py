"""The event store: one JetStream stream, one subject per event, one subject family per aggregate.

Subjects are ``ev.<aggregate>.<id>.<EventType>``. Optimistic concurrency compares the stream
sequence of the aggregate's last event (its *version*) through
``Nats-Expected-Last-Subject-Sequence`` scoped to ``ev.<aggregate>.<id>.*``. Several events from
one command go in one JetStream atomic batch (server >= 2.12, stream ``allow_atomic``), so they are
stored all or none with consecutive sequences; a single event is a plain publish. With tracing
on, every message of an append also carries the append span's W3C ``traceparent`` header.

A write that finds no room is refused with ``StoreFull`` whichever limit it met (the server's
``max_file_store``, the account's storage, the stream's own ``max_bytes``, a full disk); the store
remembers what the latest refused append needed until an append succeeds, so that health can say
whether the log can take it again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from adapters.envelope import (
    MSG_ID,
    SUBJECT_PREFIX,
    EventCodec,
    Metadata,
    RecordedEvent,
    aggregate_filter,
    encode,
    subject_for,
    to_domain,
)
from adapters.tracing import NO_TRACING, Tracing
from domain.base import Aggregate, AggregateIndex, Event
from handlers.ports import (
    AppendResult,
    ConcurrencyConflict,
    DuplicateAppend,
    EventStoreError,
    EventTooLarge,
    StoreFull,
)

S = TypeVar("S")

WRONG_LAST_SEQUENCE = 10071
BATCH_DUPLICATE_MSG_ID = 10201
MESSAGE_TOO_LARGE = 10054
# A write that finds no room (nats-server's errors.json): the account's storage limit, the
# server's (``max_file_store``), storage resources exhausted (clustered placement).
STORAGE_EXHAUSTED = frozenset({10002, 10023, 10047})
# "Stream store failed": how a stream's own limits with discard new ("maximum bytes exceeded",
# "maximum messages exceeded") and a full disk ("no space left on device") are told; other
# store failures under this code are not about room.
STREAM_STORE_FAILED = 10077
_NO_ROOM = ("maximum", "no space left")
# What a stored message costs besides its subject and body: our headers (expected sequence,
# message id, batch) and the file store's record framing; an estimate on the generous side.
_RECORD_OVERHEAD = 256
_READ_PAGE = 1000


@dataclass(frozen=True)
class StreamSettings:
    name: str = "JETFLOW"
    replicas: int = 1
    max_msg_size: int = 1024 * 1024
    duplicate_window_s: float = 120.0
    max_age_s: float = 0.0
    # The stream's own byte limit (-1: none, only the server's and the account's apply).
    max_bytes: int = -1

    def as_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subjects": [f"{SUBJECT_PREFIX}.>"],
            "retention": "limits",
            "storage": "file",
            # A full log refuses the next event; it never drops the oldest to make room.
            "discard": "new",
            "max_bytes": self.max_bytes,
            "num_replicas": self.replicas,
            "max_msg_size": self.max_msg_size,
            "max_age": int(self.max_age_s * 1e9),
            "duplicate_window": int(self.duplicate_window_s * 1e9),
            "allow_direct": True,
            "allow_atomic": True,
            # The log is append-only for everyone, the service included: no message is ever
            # deleted (a revocation would disappear) and the stream is never purged.
            "deny_delete": True,
            "deny_purge": True,
        }


@dataclass(frozen=True)
class StorageState:
    """How full the log is, as far as JetStream tells a client.

    ``stream_room``/``account_room``: bytes left under the stream's and the account's limits
    (None where no such limit is set; the server's own ``max_file_store`` is not shown to
    clients). ``refused_bytes``: what the latest append needed when it was refused for want of
    room, None once an append succeeds.
    """

    used_bytes: int
    limit_bytes: int | None
    stream_room: int | None
    account_room: int | None
    refused_bytes: int | None

    def has_room_for_refused(self) -> bool:
        """Whether the stream's and the account's limits would take the refused append now."""
        needed = self.refused_bytes or 0
        return all(room is None or room >= needed for room in (self.stream_room, self.account_room))


class JetStreamEventStore:
    """The event store port on one JetStream stream."""

    def __init__(
        self,
        nc: Client,
        aggregates: AggregateIndex,
        settings: StreamSettings | None = None,
        *,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.codec = EventCodec(aggregates)
        self.settings = settings or StreamSettings()
        self._refused_bytes: int | None = None
        self.tracing = tracing

    @classmethod
    async def connect(
        cls, url: str, aggregates: AggregateIndex, settings: StreamSettings | None = None
    ) -> JetStreamEventStore:
        nc = await nats.connect(servers(url), name="jetflow-event-store")
        store = cls(nc, aggregates, settings)
        await store.ensure_stream()
        return store

    @property
    def aggregates(self) -> AggregateIndex:
        return self.codec.aggregates

    def decode(self, msg: Msg) -> RecordedEvent:
        """A message a consumer of this stream delivered, as the event it records."""
        return self.codec.decode(msg.metadata.sequence.stream, msg.data, msg.headers)

    async def close(self) -> None:
        await self.nc.drain()

    @property
    def stream(self) -> str:
        return self.settings.name

    async def ensure_stream(self) -> None:
        """Create or update the stream; the raw API is used because nats-py's StreamConfig
        cannot express every field the server supports."""
        config = json.dumps(self.settings.as_config()).encode()
        for action in ("CREATE", "UPDATE"):
            reply = await self.nc.request(f"$JS.API.STREAM.{action}.{self.stream}", config)
            error = json.loads(reply.data).get("error")
            if error is None:
                return
            if action == "CREATE" and error.get("err_code") == 10058:  # name already in use
                continue
            if no_room(error.get("err_code"), error.get("description")):
                # A stream's byte limit is reserved in the server's store when it is set.
                raise StoreFull(
                    f"the stream {self.stream} cannot be given {self.settings.max_bytes} bytes "
                    f"(JETFLOW_STREAM_MAX_BYTES): {error.get('description')}"
                )
            raise EventStoreError(f"stream {action.lower()} failed: {error}")

    async def last_seq(self) -> int:
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq)

    async def storage(self) -> StorageState:
        """The stream's bytes and the limits a client can see (stream info, account info)."""
        info = await self.js.stream_info(self.stream)
        account = await self.js.account_info()
        used = int(info.state.bytes)
        stream_limit = _limit(info.config.max_bytes)
        account_limit = _limit(account.limits.max_storage)
        return StorageState(
            used_bytes=used,
            limit_bytes=stream_limit if stream_limit is not None else account_limit,
            stream_room=None if stream_limit is None else stream_limit - used,
            account_room=None if account_limit is None else account_limit - account.storage,
            refused_bytes=self._refused_bytes,
        )

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
        guard = {
            "Nats-Expected-Last-Subject-Sequence": str(expected_version),
            "Nats-Expected-Last-Subject-Sequence-Subject": aggregate_filter(
                aggregate, aggregate_id
            ),
        }
        messages = [
            (
                subject_for(aggregate, aggregate_id, event.type_name()),
                encode(aggregate, aggregate_id, event, meta, occurred_at),
            )
            for event in events
        ]
        try:
            if not self.tracing.enabled:  # the benchmarked path: no span, no header
                result = await self._publish(messages, guard, {}, idempotency_key)
            else:
                attributes = {
                    "messaging.system": "nats",
                    "messaging.destination.name": messages[0][0],
                    "messaging.batch.message_count": len(messages),
                }
                with self.tracing.span("jetstream append", attributes, kind="producer") as span:
                    trace: dict[str, str] = {}
                    self.tracing.inject(trace)  # the append span's context, for every message
                    result = await self._publish(messages, guard, trace, idempotency_key)
                    span.set_attribute("jetflow.seq", result.last_seq)
        except StoreFull:
            self._refused_bytes = sum(len(s) + len(b) + _RECORD_OVERHEAD for s, b in messages)
            raise
        self._refused_bytes = None
        return result

    async def _publish(
        self,
        messages: list[tuple[str, bytes]],
        guard: dict[str, str],
        trace: dict[str, str],
        idempotency_key: str | None,
    ) -> AppendResult:
        if len(messages) == 1:
            subject, body = messages[0]
            headers = guard | trace
            if idempotency_key:
                headers[MSG_ID] = msg_id(idempotency_key, 1)
            return await self._publish_one(subject, body, headers)
        return await self._publish_batch(messages, guard, trace, idempotency_key)

    async def appended(
        self, aggregate: str, aggregate_id: str, idempotency_key: str
    ) -> AppendResult | None:
        """Where the append made with ``idempotency_key`` went in this aggregate's history, read
        from its messages' ``Nats-Msg-Id`` headers. Only read: asking by publishing under the same
        message id (with an expectation that refuses it) left the id pending in a cluster, and
        every later append under it timed out."""
        return keyed_append(await self.history(aggregate, aggregate_id), idempotency_key)

    async def _publish_one(
        self, subject: str, body: bytes, headers: dict[str, str]
    ) -> AppendResult:
        try:
            ack = await self.js.publish(subject, body, stream=self.stream, headers=headers)
        except APIError as error:
            raise _translate(error.err_code, error.description) from error
        return AppendResult(ack.seq, ack.seq, bool(ack.duplicate))

    async def _publish_batch(
        self,
        messages: list[tuple[str, bytes]],
        guard: dict[str, str],
        trace: dict[str, str],
        idempotency_key: str | None,
    ) -> AppendResult:
        batch_id = nats.nuid.NUID().next().decode()
        count = len(messages)
        batch: list[tuple[str, bytes, dict[str, str]]] = []
        for index, (subject, body) in enumerate(messages, start=1):
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(index), **trace}
            if index == 1:
                headers.update(guard)
            if idempotency_key:
                headers[MSG_ID] = msg_id(idempotency_key, index)
            if index == count:
                headers["Nats-Batch-Commit"] = "1"
            batch.append((subject, body, headers))
        # Only the commit is a request: the server's refusal of a larger message before it goes
        # unheard, and the commit then fails as "batch is incomplete". So the same limit is
        # checked here first, and told as the server tells it for a single event.
        limit = self.settings.max_msg_size
        if any(_wire_size(body, headers) > limit for _, body, headers in batch):
            raise EventTooLarge("message size exceeds maximum allowed")
        for subject, body, headers in batch[:-1]:
            await self.nc.publish(subject, body, headers=headers)
        subject, body, headers = batch[-1]
        reply = await self.nc.request(subject, body, timeout=5.0, headers=headers)
        ack = json.loads(reply.data)
        if error := ack.get("error"):
            raise _translate(error.get("err_code"), error.get("description", ""))
        last = int(ack["seq"])
        return AppendResult(last - count + 1, last)

    # ------------------------------------------------------------------ read

    async def read_subject(self, subject_filter: str, from_seq: int = 1) -> list[RecordedEvent]:
        """Every event matching ``subject_filter`` from ``from_seq`` on, in stream order.

        Uses batched direct gets: no consumer is created, so loading an aggregate costs a few
        round trips however many readers there are.
        """
        events: list[RecordedEvent] = []
        start = from_seq
        while True:
            page, pending = await self.read_page(subject_filter, start)
            events.extend(page)
            if not page or pending == 0:
                return events
            start = page[-1].seq + 1

    async def read_page(self, subject_filter: str, start: int) -> tuple[list[RecordedEvent], int]:
        """Up to one page of matching events from ``start`` on, and how many remain after it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[str, int]] = loop.create_future()
        page: list[RecordedEvent] = []

        async def receive(msg: Msg) -> None:
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is None:
                seq = int(headers["Nats-Sequence"])
                page.append(self.codec.decode(seq, msg.data, headers))
            elif not done.done():
                done.set_result((status, int(headers.get("Nats-Num-Pending", 0))))

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=receive)
        try:
            request = {"seq": start, "next_by_subj": subject_filter, "batch": _READ_PAGE}
            await self.nc.publish(
                f"$JS.API.DIRECT.GET.{self.stream}", json.dumps(request).encode(), reply=inbox
            )
            status, pending = await asyncio.wait_for(done, timeout=5.0)
        except TimeoutError as error:
            raise NatsTimeoutError from error
        finally:
            await sub.unsubscribe()
        if status == "404":
            return [], 0
        if status != "204":
            raise EventStoreError(f"direct get answered status {status}")
        return page, pending

    async def get(self, seq: int) -> RecordedEvent:
        raw = await self.js.get_msg(self.stream, seq, direct=True)
        return self.codec.decode(seq, raw.data or b"", raw.headers)

    async def first(self, subject_filter: str) -> RecordedEvent | None:
        """The earliest event matching ``subject_filter`` (one direct get), or None."""
        try:
            raw = await self.js.get_msg(
                self.stream, 1, subject=subject_filter, direct=True, next=True
            )
        except NotFoundError:
            return None
        return self.codec.decode(raw.seq or 0, raw.data or b"", raw.headers)

    async def history(self, aggregate: str, aggregate_id: str) -> list[RecordedEvent]:
        return await self.read_subject(aggregate_filter(aggregate, aggregate_id))

    async def load(self, aggregate: Aggregate[S], aggregate_id: str) -> tuple[S, int]:
        """Rebuild an aggregate's state; the version is the sequence of its last event."""
        recorded = await self.history(aggregate.name, aggregate_id)
        state = aggregate.fold([to_domain(aggregate, r) for r in recorded])
        return state, recorded[-1].seq if recorded else 0


def msg_id(idempotency_key: str, index: int) -> str:
    """The ``Nats-Msg-Id`` of an append's ``index``-th event (from 1): the key itself for the
    first, ``<key>:<index>`` for the others. A resend that decides a different number of events
    than its first delivery (a node's first heartbeat is two events, the next one) still meets
    the first's id, so it is told apart as a duplicate instead of being appended again."""
    return idempotency_key if index == 1 else f"{idempotency_key}:{index}"


def keyed_append(events: Sequence[RecordedEvent], idempotency_key: str) -> AppendResult | None:
    """The append among ``events`` (one aggregate's history) made with ``idempotency_key``: its
    first event carries the key as message id, the rest ``<key>:<n>`` in consecutive order."""
    by_id = {event.msg_id: event.seq for event in events if event.msg_id}
    if (first := by_id.get(msg_id(idempotency_key, 1))) is None:
        return None
    last, index = first, 2
    while (seq := by_id.get(msg_id(idempotency_key, index))) is not None:
        last, index = seq, index + 1
    return AppendResult(first, last, duplicate=True)


def servers(url: str) -> list[str]:
    """``NATS_URL`` may list a cluster's nodes separated by commas; nats-py wants a list."""
    return [part.strip() for part in url.split(",") if part.strip()]


def _wire_size(body: bytes, headers: dict[str, str]) -> int:
    """What the server holds against ``max_msg_size``: the body and the header block
    (``NATS/1.0\\r\\n``, a ``Name: value\\r\\n`` line per header, a blank line)."""
    lines = sum(len(name.encode()) + len(value.encode()) + 4 for name, value in headers.items())
    return len(body) + 12 + lines


def _limit(configured: int | None) -> int | None:
    """A JetStream limit as bytes, None for "no limit" (-1 or 0)."""
    return configured if configured is not None and configured > 0 else None


def no_room(err_code: int | None, description: str | None) -> bool:
    """Whether a JetStream refusal of a write means the store has no room for it."""
    if err_code in STORAGE_EXHAUSTED:
        return True
    told = (description or "").lower()
    return err_code == STREAM_STORE_FAILED and any(words in told for words in _NO_ROOM)


def _translate(err_code: int | None, description: str | None) -> EventStoreError:
    if no_room(err_code, description):
        return StoreFull(f"{err_code}: {description}")
    if err_code == WRONG_LAST_SEQUENCE:
        return ConcurrencyConflict(description)
    if err_code == BATCH_DUPLICATE_MSG_ID:
        return DuplicateAppend(description)
    if err_code == MESSAGE_TOO_LARGE:
        return EventTooLarge(description)
    return EventStoreError(f"{err_code}: {description}")
