"""Delivering one due event: the POST, its retries with backoff, and every attempt recorded.

Each attempt is bounded as a whole (``timeout_s``, however slowly the receiver drips its answer)
and holds one of a fixed number of permits only while it is on the wire, never while it backs off.
What is recorded of a failure names no address, port or system error: a refused target reads
"refused by policy" whatever listens there, so the delivery log cannot be used to map a network.
Each attempt is a span in the trace of the event it delivers (the POST and its record under it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from adapters import log_context
from adapters.egress_http import EgressRefused
from adapters.envelope import Metadata, RecordedEvent
from adapters.tracing import NO_TRACING, Tracing
from domain.base import DomainError
from domain.webhooks import WEBHOOK, RecordWebhookAttempt
from handlers.commands import CommandContext, CommandService

log = logging.getLogger(__name__)
# Enough of an answer's body to keep the connection reusable; the rest is not read.
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Notification:
    body: bytes
    headers: dict[str, str]


# What an event's callback is told; None when its aggregate's source no longer notifies it.
Notify = Callable[[RecordedEvent], Notification | None]


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    error: str | None
    retry: bool  # whether another attempt could go differently


@dataclass
class Courier:
    commands: CommandService
    notify: Notify
    permits: asyncio.Semaphore
    max_attempts: int
    backoff_s: float
    timeout_s: float
    tracing: Tracing = NO_TRACING

    async def deliver_next(self, webhook_id: str, http: httpx.AsyncClient) -> bool:
        """Settle the oldest event due of ``webhook_id``; answer whether more may be due."""
        # The intake and this lane record everything of the instance in this process, so its
        # cached state is current; were it behind another process, recording the attempt would
        # be refused and the next look reads the stream.
        repository = self.commands.repository
        known = repository.cached(WEBHOOK, webhook_id) or await repository.load(WEBHOOK, webhook_id)
        state = known[0]
        seq, url = state.next_due, state.url
        if seq is None or url is None:
            return False
        event = await self.commands.store.get(seq)
        notification = self.notify(event)
        attempt = state.attempts
        while True:
            attempt += 1
            attributes = {
                "jetflow.webhook_id": webhook_id,
                "jetflow.event": event.type,
                "jetflow.seq": event.seq,
                "jetflow.attempt": attempt,
            }
            with (
                self.tracing.span("webhook deliver", attributes, parent=event.traceparent) as span,
                log_context.bound(webhook_id=webhook_id, seq=event.seq, attempt=attempt),
            ):
                if notification is None:
                    outcome = Attempt(None, "no notification for this event", retry=False)
                else:
                    outcome = await self.post(http, url, notification)
                if outcome.status_code is not None:
                    span.set_attribute("http.response.status_code", outcome.status_code)
                will_retry = outcome.retry and attempt < self.max_attempts
                self.commands.metrics.webhook_attempt(outcome.error is None, will_retry)
                recorded = await self._record(webhook_id, url, event, attempt, outcome, will_retry)
            if not recorded:
                return True  # someone else settled it: look at what is due now
            if not will_retry:
                return True
            await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))

    async def post(self, http: httpx.AsyncClient, url: str, notification: Notification) -> Attempt:
        async with self.permits:
            try:
                async with asyncio.timeout(self.timeout_s):
                    status = await _exchange(http, url, notification)
            except EgressRefused as refused:
                return Attempt(None, str(refused), retry=False)
            except (TimeoutError, httpx.TimeoutException):
                return Attempt(None, "timed out", retry=True)
            except httpx.HTTPError as failure:
                # The kind of failure says enough; its text can name addresses and ports.
                return Attempt(None, type(failure).__name__, retry=True)
        if 200 <= status < 300:
            return Attempt(status, None, retry=False)
        return Attempt(status, f"HTTP {status}", retry=True)

    async def _record(
        self,
        webhook_id: str,
        url: str,
        event: RecordedEvent,
        attempt: int,
        outcome: Attempt,
        will_retry: bool,
    ) -> bool:
        command = RecordWebhookAttempt(
            webhook_id=webhook_id,
            url=url,
            event_seq=event.seq,
            event_type=event.type,
            attempt=attempt,
            delivered=outcome.error is None,
            status_code=outcome.status_code,
            error=outcome.error,
            will_retry=will_retry,
        )
        context = CommandContext(Metadata(actor="system:webhooks", causation_id=event.event_id))
        try:
            await self.commands.execute(WEBHOOK, webhook_id, command, context)
        except DomainError as refused:
            log.info("webhook attempt not recorded: %s", refused.message)
            return False
        return True


async def _exchange(http: httpx.AsyncClient, url: str, notification: Notification) -> int:
    content, headers = notification.body, notification.headers
    async with http.stream("POST", url, content=content, headers=headers) as answer:
        read = 0
        async for chunk in answer.aiter_raw():
            read += len(chunk)
            if read > MAX_ANSWER_BYTES:
                break
        return answer.status_code
