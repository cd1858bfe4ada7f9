"""A live feed of recorded events for one subscriber, straight from JetStream.

Each subscriber gets its own ordered consumer (ephemeral, flow-controlled, restarted by nats-py
on a gap), starting at a stream sequence, so a client that resumes from the last sequence it saw
gets no gap and no duplicate. Messages go into a bounded queue: a subscriber that cannot keep up
is cut off with a reason instead of slowing the others or growing memory, and resumes later from
its last sequence.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext as _JS

from adapters.envelope import SUBJECT_PREFIX, RecordedEvent
from adapters.event_store import JetStreamEventStore

DEFAULT_QUEUE = 1000


@dataclass(frozen=True)
class FeedFilter:
    """Which events a subscriber wants; ``None`` matches anything in that position."""

    aggregate: str | None = None
    aggregate_id: str | None = None
    event_type: str | None = None

    def subject(self) -> str:
        parts = (self.aggregate, self.aggregate_id, self.event_type)
        return ".".join((SUBJECT_PREFIX, *(p or "*" for p in parts)))


class FeedOverflow(Exception):
    """The subscriber fell more than the queue's length behind the stream."""

    def __init__(self, last_seq: int, limit: int) -> None:
        super().__init__(
            f"slow consumer: more than {limit} events waiting; resume from sequence {last_seq + 1}"
        )
        self.last_seq = last_seq


class FeedClosed(Exception):
    """The service is shutting down; the subscriber should reconnect elsewhere or later."""


class LiveFeed:
    """``async with LiveFeed(...) as feed``, then ``await feed.next(timeout)`` in a loop."""

    def __init__(
        self,
        store: JetStreamEventStore,
        wanted: FeedFilter,
        *,
        from_seq: int | None = None,
        max_queue: int = DEFAULT_QUEUE,
        closing: asyncio.Event | None = None,
    ) -> None:
        self.store = store
        self.wanted = wanted
        self.from_seq = from_seq
        self.max_queue = max_queue
        self.closing = closing or asyncio.Event()
        self.last_seq = (from_seq or 1) - 1
        self._queue: asyncio.Queue[RecordedEvent] = asyncio.Queue(maxsize=max_queue)
        self._overflowed = asyncio.Event()
        self._sub: _JS.PushSubscription | None = None

    async def __aenter__(self) -> LiveFeed:
        if self.from_seq is None:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        else:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.from_seq
            )
        self._sub = await self.store.js.subscribe(
            self.wanted.subject(),
            stream=self.store.stream,
            cb=self._receive,
            ordered_consumer=True,
            config=config,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _receive(self, msg: Msg) -> None:
        if self._overflowed.is_set():
            return
        try:
            self._queue.put_nowait(self.store.decode(msg))
        except asyncio.QueueFull:
            self._overflowed.set()

    async def next(self, timeout: float) -> RecordedEvent | None:
        """The next event, or None after ``timeout`` seconds of silence (time for a keep-alive).

        Raises ``FeedOverflow`` once the queue has drained after an overflow (everything before
        the cut is still delivered), and ``FeedClosed`` when the service is closing.
        """
        if self._queue.empty():
            if self._overflowed.is_set():
                raise FeedOverflow(self.last_seq, self.max_queue)
            getter = asyncio.ensure_future(self._queue.get())
            stopper = asyncio.ensure_future(self.closing.wait())
            overflow = asyncio.ensure_future(self._overflowed.wait())
            try:
                await asyncio.wait(
                    (getter, stopper, overflow), timeout=timeout, return_when="FIRST_COMPLETED"
                )
            finally:
                for waiter in (stopper, overflow):
                    waiter.cancel()
            if not getter.done():
                getter.cancel()
                if self.closing.is_set():
                    raise FeedClosed
                if self._overflowed.is_set() and self._queue.empty():
                    raise FeedOverflow(self.last_seq, self.max_queue)
                return None
            event = getter.result()
        else:
            event = self._queue.get_nowait()
        self.last_seq = event.seq
        return event
