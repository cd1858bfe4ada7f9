"""Webhook deliveries: the duty to tell a callback URL about an event, and every attempt, as facts.

One ``webhook`` aggregate per watched aggregate instance (id ``<aggregate>-<id>``). The dispatcher
first records which events are due (``WebhookDue``), and only then lets go of them, so a crash
cannot lose one; per-endpoint workers then deliver them. Each attempt is recorded in turn. The
state keeps the events due, oldest first, and the last one settled (delivered or given up): an
attempt is accepted only for the oldest event due, so an instance's events reach its callback in
stream order, and an event settled before a crash is not sent again.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, replace
from typing import Annotated

from pydantic import Field, StringConstraints

from domain.base import Aggregate, Command, Event, Invalid, StateConflict

WebhookId = Annotated[str, StringConstraints(min_length=1, max_length=300)]


class ScheduleWebhook(Command):
    webhook_id: WebhookId
    url: str
    event_seqs: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]


class RecordWebhookAttempt(Command):
    webhook_id: WebhookId
    url: str
    event_seq: Annotated[int, Field(ge=1)]
    event_type: str
    attempt: Annotated[int, Field(ge=1)]
    delivered: bool
    status_code: int | None = None
    error: str | None = None
    will_retry: bool = False


class WebhookDue(Event):
    url: str
    event_seqs: list[int]


class WebhookDelivered(Event):
    url: str
    event_seq: int
    event_type: str
    attempt: int
    status_code: int


class WebhookFailed(Event):
    url: str
    event_seq: int
    event_type: str
    attempt: int
    status_code: int | None
    error: str
    will_retry: bool


@dataclass(frozen=True)
class WebhookState:
    url: str | None = None
    settled_seq: int = 0
    # Stream sequences of the events still to deliver, oldest first.
    due: tuple[int, ...] = ()
    # Failed attempts at ``due[0]`` so far, so a worker taking over after a crash goes on counting.
    attempts: int = 0

    @property
    def next_due(self) -> int | None:
        return self.due[0] if self.due else None

    @property
    def scheduled_seq(self) -> int:
        """The newest event ever made due: everything up to it is due or settled."""
        return self.due[-1] if self.due else self.settled_seq


def decide(state: WebhookState, command: Command) -> list[Event]:
    match command:
        case ScheduleWebhook():
            if command.event_seqs != sorted(set(command.event_seqs)):
                raise Invalid("webhook_seqs_unordered", "Events fall due in stream order")
            fresh = [seq for seq in command.event_seqs if seq > state.scheduled_seq]
            if not fresh:
                return []  # a redelivered event: already due or settled
            return [WebhookDue(url=command.url, event_seqs=fresh)]
        case RecordWebhookAttempt():
            return _attempt(state, command)
    raise Invalid("unknown_command", f"Webhooks do not handle {type(command).__name__}")


def _attempt(state: WebhookState, command: RecordWebhookAttempt) -> list[Event]:
    if command.event_seq <= state.settled_seq:
        raise StateConflict(
            "webhook_already_settled", f"Event {command.event_seq} was already delivered"
        )
    if command.event_seq != state.next_due:
        raise StateConflict(
            "webhook_not_due", f"Event {command.event_seq} is not the next delivery due"
        )
    if command.delivered:
        return [
            WebhookDelivered(
                url=command.url,
                event_seq=command.event_seq,
                event_type=command.event_type,
                attempt=command.attempt,
                status_code=command.status_code or 200,
            )
        ]
    return [
        WebhookFailed(
            url=command.url,
            event_seq=command.event_seq,
            event_type=command.event_type,
            attempt=command.attempt,
            status_code=command.status_code,
            error=command.error or "failed",
            will_retry=command.will_retry,
        )
    ]


def _settled(state: WebhookState, seq: int) -> WebhookState:
    return replace(
        state,
        settled_seq=max(state.settled_seq, seq),
        due=state.due[bisect_right(state.due, seq) :],
        attempts=0,
    )


def evolve(state: WebhookState, event: Event) -> WebhookState:
    match event:
        case WebhookDue():
            return replace(state, url=event.url, due=state.due + tuple(event.event_seqs))
        case WebhookDelivered():
            return _settled(state, event.event_seq)
        case WebhookFailed(will_retry=False):
            return _settled(state, event.event_seq)
        case WebhookFailed() if event.event_seq == state.next_due:
            return replace(state, attempts=state.attempts + 1)
    return state


WEBHOOK = Aggregate[WebhookState](
    name="webhook",
    initial=WebhookState,
    decide=decide,
    evolve=evolve,
    events=(WebhookDue, WebhookDelivered, WebhookFailed),
    # An instance's first events fall due before anything else is recorded of it.
    creates=(ScheduleWebhook,),
)
