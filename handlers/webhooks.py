"""The webhook dispatcher: tells an aggregate's callback URL about each of its events.

Signed (``X-Jetflow-Signature: sha256=<HMAC-SHA256 of the body>``), retried with exponential
backoff, at least once, in stream order per aggregate instance, and per endpoint independently:

- the intake, a durable consumer of every event, records which events are due in the ``webhook``
  aggregate of their instance (``WebhookDue``) and only then acknowledges them, so no event is
  let go of before its delivery is a fact; it never waits on a receiver, so it keeps flowing;
- one lane per callback URL (``handlers.webhook_lanes``) delivers what is due there, one event at
  a time, and records each attempt as ``WebhookDelivered`` or ``WebhookFailed``; a slow or
  hanging receiver holds up its own lane only;
- after a crash the lanes are gone but the due events are not: a sweep wakes every instance the
  backlog projection shows with work, and the aggregate says which event is next.

Every connection goes through the egress guard (``adapters.egress_http``). Sources, declared by
the slices in the catalogue, say which aggregates can have a callback URL (tasks, render jobs,
deployments, pipeline executions: each takes a ``callback_url`` when created) and what their
notifications carry.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from nats.aio.msg import Msg
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.egress_http import guarded_client, tls_context
from adapters.egress_policy import EgressPolicy
from adapters.envelope import ALL_EVENTS, Metadata, RecordedEvent
from adapters.event_store import JetStreamEventStore
from adapters.tracing import NO_TRACING, Tracing
from domain.base import Aggregate
from domain.webhooks import WEBHOOK, ScheduleWebhook
from handlers.commands import CommandContext, CommandService
from handlers.consumer import consume, ensure_durable
from handlers.webhook_courier import Courier, Notification
from handlers.webhook_lanes import Lanes
from projections.deployments import webhook_backlog

log = logging.getLogger(__name__)
DISPATCHER = "pm-webhooks"
BATCH = 100
SIGNATURE_HEADER = "X-Jetflow-Signature"
SWEEP_S = 5.0
SWEEP_LIMIT = 10_000
INTAKE = CommandContext(Metadata(actor="system:webhooks"))


PayloadBuilder = Callable[[RecordedEvent], dict[str, Any] | None]


@dataclass(frozen=True)
class WebhookSource:
    aggregate: Aggregate[Any]
    url_of: Callable[[Any], str | None]
    payload_of: PayloadBuilder


def generic_payload(id_field: str, omit: frozenset[str] = frozenset()) -> PayloadBuilder:
    """Any aggregate's notification: which instance, which event, and the event's facts."""

    def build(event: RecordedEvent) -> dict[str, Any]:
        return {
            "aggregate": event.aggregate,
            id_field: event.aggregate_id,
            "event": event.type,
            "data": {k: v for k, v in event.payload.items() if k not in omit},
            "timestamp": event.occurred_at.isoformat(),
            "seq": event.seq,
        }

    return build


def callback_url(state: Any) -> str | None:
    """Where most aggregates keep their callback: a ``callback_url`` field of their state."""
    return state.callback_url  # type: ignore[no-any-return]


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def webhook_id_of(event: RecordedEvent) -> str:
    return f"{event.aggregate}-{event.aggregate_id}"


@dataclass(frozen=True)
class Dispatcher:
    """What the dispatcher is started with."""

    commands: CommandService
    sessions: async_sessionmaker[AsyncSession]
    secret: bytes
    sources: Mapping[str, WebhookSource]
    egress: EgressPolicy
    max_attempts: int = 6
    backoff_s: float = 0.5
    timeout_s: float = 5.0
    concurrency: int = 64
    tracing: Tracing = NO_TRACING

    def notification(self, event: RecordedEvent) -> Notification | None:
        source = self.sources.get(event.aggregate)
        payload = source.payload_of(event) if source is not None else None
        if payload is None:
            return None
        body = json.dumps(payload, sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body),
            "X-Jetflow-Event": event.type,
            "X-Jetflow-Delivery": event.event_id,
            "X-Jetflow-Seq": str(event.seq),
        }
        return Notification(body, headers)

    async def callback_of(self, event: RecordedEvent) -> str | None:
        """The URL to tell about this event, if its aggregate has one and notifies this event."""
        source = self.sources.get(event.aggregate)
        if source is None or source.payload_of(event) is None:
            return None
        # A callback URL is set when the instance is created and never changes, so any state
        # this process has seen of it will do; only an unseen instance is read from the stream.
        repository = self.commands.repository
        known = repository.cached(source.aggregate, event.aggregate_id)
        if known is None:
            known = await repository.load(source.aggregate, event.aggregate_id)
        return source.url_of(known[0])


@dataclass
class Intake:
    dispatcher: Dispatcher
    lanes: Lanes
    decode: Callable[[Msg], RecordedEvent]

    async def handle(self, msgs: list[Msg]) -> None:
        """Record the batch's due events, per instance in stream order, then acknowledge it."""
        due: dict[str, tuple[str, list[RecordedEvent]]] = {}
        for msg in msgs:
            event = self.decode(msg)
            url = await self.dispatcher.callback_of(event)
            if url is not None:
                due.setdefault(webhook_id_of(event), (url, []))[1].append(event)
        await asyncio.gather(*(self._schedule(wid, url, evs) for wid, (url, evs) in due.items()))
        for msg in msgs:
            await msg.ack()

    async def _schedule(self, webhook_id: str, url: str, events: list[RecordedEvent]) -> None:
        """In the trace of the first due event: its command led to this schedule."""
        command = ScheduleWebhook(
            webhook_id=webhook_id, url=url, event_seqs=[e.seq for e in events]
        )
        attributes = {"jetflow.webhook_id": webhook_id, "jetflow.seq": events[0].seq}
        tracing = self.dispatcher.tracing
        with tracing.span("webhook schedule", attributes, parent=events[0].traceparent):
            await self.dispatcher.commands.execute(WEBHOOK, webhook_id, command, INTAKE)
        self.lanes.wake(url, webhook_id)


async def sweep(sessions: async_sessionmaker[AsyncSession], lanes: Lanes) -> None:
    """Wake every instance with deliveries due, now and every ``SWEEP_S``: after a restart this
    is how the due events recorded before it are found again."""
    query = (
        select(webhook_backlog.c.webhook_id, webhook_backlog.c.url)
        .where(webhook_backlog.c.due > 0)
        .limit(SWEEP_LIMIT)
    )
    while True:
        try:
            async with sessions() as session:
                pending = (await session.execute(query)).all()
        except SQLAlchemyError:
            log.exception("webhook sweep could not read the backlog; trying again")
            pending = []
        for webhook_id, url in pending:
            lanes.wake(url, webhook_id)
        await asyncio.sleep(SWEEP_S)


async def start_dispatcher(
    store: JetStreamEventStore, dispatcher: Dispatcher
) -> asyncio.Task[None]:
    await ensure_durable(store.js, store.stream, DISPATCHER, ALL_EVENTS, max_ack_pending=BATCH)
    d = dispatcher

    async def run() -> None:
        courier = Courier(
            d.commands,
            d.notification,
            asyncio.Semaphore(d.concurrency),
            max_attempts=d.max_attempts,
            backoff_s=d.backoff_s,
            timeout_s=d.timeout_s,
            tracing=d.tracing,
        )
        tls = tls_context()

        def connect() -> httpx.AsyncClient:
            client = guarded_client(d.egress, timeout_s=d.timeout_s, max_connections=1, tls=tls)
            return d.tracing.instrument_client(client)

        lanes = Lanes(courier.deliver_next, connect)
        intake = Intake(d, lanes, store.decode)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(
                    consume(store.js, store.stream, DISPATCHER, intake.handle, batch_size=BATCH)
                )
                group.create_task(sweep(d.sessions, lanes))
        finally:
            await lanes.close()

    return asyncio.create_task(run(), name=DISPATCHER)
