"""A live feed of recorded events for one subscriber, straight from JetStream.

Each subscriber gets its own ordered consumer (ephemeral, flow-controlled, restarted by nats-py
on a gap), starting at a stream sequence, so a client that resumes from the last sequence it saw
gets no gap and no duplicate. Messages go into a bounded queue: a subscriber that cannot keep up
is cut off with a reason instead of slowing the others or growing memory, and resumes later from
its last sequence.

A feed's consumer is deleted as soon as the feed is left (and the server drops one that lost its
subscriber after ``CONSUMER_INACTIVE_S`` anyway), so clients that come and go leave nothing
behind. Whoever opened a feed may end it early with ``end`` (the client went, its credential
ended); the next ``next`` raises the reason, even with events still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext as _JS
from nats.js.errors import NotFoundError

from adapters.envelope import SUBJECT_PREFIX, RecordedEvent
from adapters.event_store import JetStreamEventStore

T = TypeVar("T")
DEFAULT_QUEUE = 1000
# The server's backstop: a consumer whose subscriber vanished without deleting it (a crash, a
# consumer recreated by nats-py while the feed was being left) is removed after this long.
CONSUMER_INACTIVE_S = 5.0
# Consumers being made or deleted for feeds whose subscriber may have left meanwhile; held
# here so that the tasks run to their end (the event loop keeps only weak references).
_UNATTENDED: set[asyncio.Future[Any]] = set()


def _unattended(work: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    task = asyncio.ensure_future(work)
    _UNATTENDED.add(task)
    task.add_done_callback(_UNATTENDED.discard)
    return task


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


class FeedEnded(Exception):
    """The feed was ended before its subscriber left it (see ``LiveFeed.end``)."""


class FeedClosed(FeedEnded):
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
        self._ending = asyncio.Event()
        self._ended: FeedEnded | None = None
        self._sub: _JS.PushSubscription | None = None

    def end(self, reason: FeedEnded) -> None:
        """End the feed: ``next`` raises ``reason`` from now on (the first reason given wins)."""
        if self._ended is None:
            self._ended = reason
            self._ending.set()

    async def __aenter__(self) -> LiveFeed:
        if self.from_seq is None:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.NEW, inactive_threshold=CONSUMER_INACTIVE_S
            )
        else:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self.from_seq,
                inactive_threshold=CONSUMER_INACTIVE_S,
            )
        opening = _unattended(
            self.store.js.subscribe(
                self.wanted.subject(),
                stream=self.store.stream,
                cb=self._receive,
                ordered_consumer=True,
                config=config,
            )
        )
        try:
            self._sub = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The subscriber left while its consumer was being made: remove it once it is.
            opening.add_done_callback(self._remove_opened)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Unsubscribe and delete the consumer now. Making and deleting it run as tasks of
        their own, awaited shielded: a feed left because its client went is left while being
        cancelled (Litestar cancels a streaming response on disconnect, again at every await),
        and the consumer must still go."""
        sub, self._sub = self._sub, None
        if sub is not None:
            await asyncio.shield(_unattended(self._remove(sub)))

    def _remove_opened(self, opening: asyncio.Future[_JS.PushSubscription]) -> None:
        if not opening.cancelled() and opening.exception() is None:
            _unattended(self._remove(opening.result()))

    async def _remove(self, sub: _JS.PushSubscription) -> None:
        await sub.unsubscribe()
        # nats-py keeps the consumer's current name there (an ordered consumer is recreated
        # under a new one after a gap) and offers no public accessor without a round trip.
        with contextlib.suppress(NotFoundError):
            await self.store.js.delete_consumer(self.store.stream, sub._consumer)

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
        the cut is still delivered), ``FeedClosed`` when the service is closing, and the reason
        given to ``end`` once the feed was ended.
        """
        if self._ended is not None:
            raise self._ended
        if self._queue.empty():
            if self._overflowed.is_set():
                raise FeedOverflow(self.last_seq, self.max_queue)
            getter = asyncio.ensure_future(self._queue.get())
            waiters = [
                asyncio.ensure_future(event.wait())
                for event in (self.closing, self._overflowed, self._ending)
            ]
            try:
                await asyncio.wait(
                    (getter, *waiters), timeout=timeout, return_when="FIRST_COMPLETED"
                )
            finally:
                # Also when cancelled (the client went): no waiter outlives the call. A getter
                # that already has its event stays done, and ``done()`` says so below.
                for waiter in (getter, *waiters):
                    waiter.cancel()
            if self._ended is not None:
                raise self._ended
            if not getter.done():
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
