"""The webhook dispatcher: tells an aggregate's callback URL about each of its events.

Signed (``X-Jetflow-Signature: sha256=<HMAC-SHA256 of the body>``), retried with exponential
backoff, at least once, in stream order: its durable consumer holds one event at a time, and the
``webhook`` aggregate remembers the last event settled, so a redelivery after a crash resumes
where it stopped. Every attempt is recorded as ``WebhookDelivered`` or ``WebhookFailed``.

Sources, declared by the slices in the catalogue, say which aggregates can have a callback URL
(tasks, render jobs, deployments, pipeline executions: each takes a ``callback_url`` when
created) and what their notifications carry.
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

from adapters.envelope import ALL_EVENTS, Metadata, RecordedEvent
from adapters.event_store import JetStreamEventStore
from domain.base import Aggregate, DomainError
from domain.webhooks import WEBHOOK, RecordWebhookAttempt
from handlers.commands import CommandContext, CommandService
from handlers.consumer import consume, ensure_durable

log = logging.getLogger(__name__)
DISPATCHER = "pm-webhooks"
BATCH = 100  # events are still handled one after another, in stream order
SIGNATURE_HEADER = "X-Jetflow-Signature"


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


@dataclass
class Dispatcher:
    commands: CommandService
    secret: bytes
    sources: Mapping[str, WebhookSource]
    max_attempts: int = 6
    backoff_s: float = 0.5
    timeout_s: float = 10.0

    async def deliver(self, event: RecordedEvent, msg: Msg, http: httpx.AsyncClient) -> None:
        source = self.sources.get(event.aggregate)
        if source is None:
            return
        # A callback URL is set when the instance is created and never changes, so any state
        # this process has seen of it will do; only an unseen instance is read from the stream.
        known = self.commands.repository.cached(source.aggregate, event.aggregate_id)
        if known is None:
            known = await self.commands.repository.load(source.aggregate, event.aggregate_id)
        url = source.url_of(known[0])
        payload = source.payload_of(event)
        if url is None or payload is None:
            return
        webhook_id = f"{event.aggregate}-{event.aggregate_id}"
        settled, _ = await self.commands.repository.load(WEBHOOK, webhook_id)
        if event.seq <= settled.settled_seq:
            return  # delivered before a crash or redelivery
        body = json.dumps(payload, sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body),
            "X-Jetflow-Event": event.type,
            "X-Jetflow-Delivery": event.event_id,
            "X-Jetflow-Seq": str(event.seq),
        }
        for attempt in range(1, self.max_attempts + 1):
            status_code: int | None = None
            try:
                answer = await http.post(url, content=body, headers=headers)
                status_code = answer.status_code
                error = None if answer.is_success else f"HTTP {answer.status_code}"
            except httpx.HTTPError as failure:
                error = f"{type(failure).__name__}: {failure}"
            will_retry = error is not None and attempt < self.max_attempts
            await self._record(webhook_id, url, event, attempt, error, status_code, will_retry)
            if error is None or not will_retry:
                return
            await msg.in_progress()  # keep the event ours while we back off
            await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))

    async def _record(
        self,
        webhook_id: str,
        url: str,
        event: RecordedEvent,
        attempt: int,
        error: str | None,
        status_code: int | None,
        will_retry: bool,
    ) -> None:
        command = RecordWebhookAttempt(
            webhook_id=webhook_id,
            url=url,
            event_seq=event.seq,
            event_type=event.type,
            attempt=attempt,
            delivered=error is None,
            status_code=status_code,
            error=error,
            will_retry=will_retry,
        )
        context = CommandContext(Metadata(actor="system:webhooks", causation_id=event.event_id))
        try:
            await self.commands.execute(WEBHOOK, webhook_id, command, context)
        except DomainError as refused:
            log.info("webhook attempt not recorded: %s", refused.message)


async def start_dispatcher(
    store: JetStreamEventStore, dispatcher: Dispatcher
) -> asyncio.Task[None]:
    await ensure_durable(store.js, store.stream, DISPATCHER, ALL_EVENTS, max_ack_pending=BATCH)

    async def run() -> None:
        async with httpx.AsyncClient(timeout=dispatcher.timeout_s) as http:

            async def handle(msgs: list[Msg]) -> None:
                for msg in msgs:
                    recorded = store.decode(msg)
                    await dispatcher.deliver(recorded, msg, http)
                    await msg.ack()

            await consume(store.js, store.stream, DISPATCHER, handle, batch_size=BATCH)

    return asyncio.create_task(run(), name=DISPATCHER)
