"""Webhook deliveries: every attempt to tell a callback URL about an event is itself a fact.

One ``webhook`` aggregate per watched aggregate instance (id ``<aggregate>-<id>``) records the
attempts in order. Its state remembers the last event settled (delivered or given up), so an
event redelivered after a crash is not sent again and events are sent in stream order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, StringConstraints

from domain.base import Aggregate, Command, Event, Invalid, StateConflict


class RecordWebhookAttempt(Command):
    webhook_id: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    url: str
    event_seq: Annotated[int, Field(ge=1)]
    event_type: str
    attempt: Annotated[int, Field(ge=1)]
    delivered: bool
    status_code: int | None = None
    error: str | None = None
    will_retry: bool = False


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
    settled_seq: int = 0


def decide(state: WebhookState, command: Command) -> list[Event]:
    if not isinstance(command, RecordWebhookAttempt):
        raise Invalid("unknown_command", f"Webhooks do not handle {type(command).__name__}")
    if command.event_seq <= state.settled_seq:
        raise StateConflict(
            "webhook_already_settled", f"Event {command.event_seq} was already delivered"
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


def evolve(state: WebhookState, event: Event) -> WebhookState:
    match event:
        case WebhookDelivered():
            return WebhookState(settled_seq=event.event_seq)
        case WebhookFailed(will_retry=False):
            return WebhookState(settled_seq=event.event_seq)
    return state


WEBHOOK = Aggregate[WebhookState](
    name="webhook",
    initial=WebhookState,
    decide=decide,
    evolve=evolve,
    events=(WebhookDelivered, WebhookFailed),
)
