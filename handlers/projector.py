"""Projection runners: one durable JetStream pull consumer per projection.

The consumer is a cache of the projection's position, the checkpoint row in SQL is the truth: at
start the consumer is (re)created to begin right after the checkpoint whenever the two disagree
(a wiped database, a replay, a runner that died mid-batch). ``max_ack_pending`` equal to the batch
size keeps a single batch in flight, so events are applied in stream order. One projector runs
per projection: a second service instance would recreate the consumer under the first.

A batch that fails is applied again event by event, each in its own transaction with the
checkpoint, to find the event that fails (``Parking``): after ``after_attempts`` failures of its
own it is parked (recorded in the log, ``domain.parking``) and the checkpoint moves past it, or,
for a projection whose policy is ``halt``, the projection stops loudly. A failure after which the
database does not answer ``SELECT 1`` is an outage, not a poison event: no attempt is counted and
the batch is handed over again later, so an outage never parks anything.

With tracing on, applying a batch is a span in the trace of the commands that appended its events
(``Tracing.batch``: a batch can hold events of several traces), its SQL statements under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adapters import log_context
from adapters.envelope import RecordedEvent
from adapters.event_store import JetStreamEventStore
from adapters.metrics import Metrics
from adapters.tracing import NO_TRACING, Tracing
from handlers.commands import CommandService
from handlers.consumer import StopConsuming, consume
from handlers.parking import error_text, park_event
from projections.base import Projection, apply_batch, pass_event, read_checkpoint, reset

log = logging.getLogger(__name__)


def consumer_name(projection: Projection) -> str:
    return f"projection-{projection.name}"


async def projection_consumer(
    store: JetStreamEventStore, projection: Projection
) -> ConsumerInfo | None:
    """The projection's durable consumer as JetStream sees it; None before a projector made it."""
    try:
        return await store.js.consumer_info(store.stream, consumer_name(projection))
    except NotFoundError:
        return None


def events_behind(consumer: ConsumerInfo) -> int:
    """What the projection has yet to apply: events not delivered to its consumer, and those
    delivered but not acknowledged (health, metrics, readiness and read-your-writes all ask)."""
    return (consumer.num_pending or 0) + (consumer.num_ack_pending or 0)


@dataclass
class ProjectionProgress:
    """In-process view of how far each projection has got, so waiting readers wake at once,
    and which projections this process halted (name to the error), for health and metrics."""

    applied: dict[str, int] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    halted: dict[str, str] = field(default_factory=dict)

    async def advance(self, name: str, seq: int) -> None:
        async with self.changed:
            self.applied[name] = max(seq, self.applied.get(name, 0))
            self.changed.notify_all()


class ProjectionHalted(StopConsuming):
    """A projection whose policy is ``halt`` met an event that keeps failing."""


@dataclass(frozen=True)
class Parking:
    """How a failing batch is taken apart: who records a parked event, and after how many
    failures of its own."""

    commands: CommandService
    after_attempts: int = 5
    retry_delay_s: float = 0.2


async def database_answers(sessions: async_sessionmaker[AsyncSession]) -> bool:
    try:
        async with sessions() as session:
            await session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


async def apply_one_by_one(
    sessions: async_sessionmaker[AsyncSession],
    projection: Projection,
    events: list[RecordedEvent],
    parking: Parking,
    progress: ProjectionProgress,
) -> int:
    """Apply a failed batch event by event, parking (or halting on) the events that keep
    failing; return the checkpoint. Raises the failure itself while the database is away."""
    applied = await read_checkpoint(sessions, projection.name)
    for event in events:
        attempts = 0
        while event.seq > applied:
            attempts += 1
            try:
                applied = await apply_batch(sessions, projection, [event])
            except Exception as failure:  # a projection's apply may raise anything on bad data
                if not await database_answers(sessions):
                    raise
                if attempts < parking.after_attempts:
                    await asyncio.sleep(parking.retry_delay_s)
                    continue
                if projection.on_failure == "halt":
                    progress.halted[projection.name] = error_text(failure)
                    log.error(
                        "projection %s HALTED: event %d (%s) failed %d times: %s",
                        projection.name,
                        event.seq,
                        event.type,
                        attempts,
                        error_text(failure),
                    )
                    raise ProjectionHalted(projection.name) from failure
                await park_event(parking.commands, projection, event, failure, attempts)
                log.error(
                    "projection %s parked event %d (%s) after %d attempts: %s",
                    projection.name,
                    event.seq,
                    event.type,
                    attempts,
                    error_text(failure),
                )
                applied = await pass_event(sessions, projection, event.seq)
    return applied


async def prepare_consumer(
    js: JetStreamContext, stream: str, projection: Projection, checkpoint: int, batch_size: int
) -> None:
    name = consumer_name(projection)
    try:
        info = await js.consumer_info(stream, name)
    except NotFoundError:
        info = None
    if info is not None:
        same_filter = info.config.filter_subject == projection.subject_filter
        ahead_of_db = (info.ack_floor.stream_seq if info.ack_floor else 0) > checkpoint
        # Unacknowledged deliveries belong to a runner that died mid-batch; waiting out their
        # ack_wait would stall the projection, and the checkpoint says where to resume anyway.
        in_flight = (info.num_ack_pending or 0) > 0
        unchanged = info.config.max_ack_pending == batch_size
        if same_filter and unchanged and not ahead_of_db and not in_flight:
            return
        await js.delete_consumer(stream, name)
    await js.add_consumer(
        stream,
        ConsumerConfig(
            durable_name=name,
            name=name,
            filter_subject=projection.subject_filter,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=checkpoint + 1,
            ack_policy=JsAckPolicy.ALL,
            ack_wait=30,
            max_ack_pending=batch_size,
        ),
    )


async def start_projection(
    store: JetStreamEventStore,
    projection: Projection,
    sessions: async_sessionmaker[AsyncSession],
    progress: ProjectionProgress,
    *,
    batch_size: int = 500,
    metrics: Metrics,
    parking: Parking,
    tracing: Tracing = NO_TRACING,
) -> asyncio.Task[None]:
    """Line up the durable consumer with the SQL checkpoint and start applying batches, each
    timed into ``metrics``; a failing batch is taken apart as ``parking`` says."""
    progress.halted.pop(projection.name, None)
    checkpoint = await read_checkpoint(sessions, projection.name)
    await progress.advance(projection.name, checkpoint)
    await prepare_consumer(store.js, store.stream, projection, checkpoint, batch_size)

    async def apply(msgs: list[Msg]) -> None:
        started = time.perf_counter()
        events = [store.decode(m) for m in msgs]
        first, last = events[0].seq, events[-1].seq
        attributes = {
            "jetflow.projection": projection.name,
            "jetflow.first_seq": first,
            "jetflow.seq": last,
            "messaging.batch.message_count": len(events),
        }
        with (
            tracing.batch(
                f"projection {projection.name}", [e.traceparent for e in events], attributes
            ),
            log_context.bound(projection=projection.name, first_seq=first, seq=last),
        ):
            try:
                applied = await apply_batch(sessions, projection, events)
            except Exception:  # the whole batch rolled back: find the event that fails
                log.warning(
                    "projection %s: batch %d..%d failed; applying it event by event",
                    projection.name,
                    first,
                    last,
                    exc_info=True,
                )
                applied = await apply_one_by_one(sessions, projection, events, parking, progress)
        metrics.projection_batch(projection.name, time.perf_counter() - started)
        await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch
        await progress.advance(projection.name, applied)

    return asyncio.create_task(
        consume(store.js, store.stream, consumer_name(projection), apply, batch_size=batch_size),
        name=f"projection-{projection.name}",
    )


async def rebuild(
    store: JetStreamEventStore,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    projection: Projection,
    on_batch: Callable[[int, int], None] | None = None,
) -> int:
    """Drop the projection and apply its events again from sequence 1, reading the stream with
    batched direct gets (no consumer); the durable consumer is removed so that the next start
    resumes right after the rebuilt checkpoint. Run it while the service is stopped."""
    await reset(engine, projection)
    with contextlib.suppress(NotFoundError):
        await store.js.delete_consumer(store.stream, consumer_name(projection))
    applied = 0
    seq = 1
    while True:
        page, _ = await store.read_page(projection.subject_filter, seq)
        if not page:
            return applied
        await apply_batch(sessions, projection, page)
        applied += len(page)
        seq = page[-1].seq + 1
        if on_batch is not None:
            on_batch(applied, page[-1].seq)
