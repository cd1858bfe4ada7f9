"""What every NATS command subject shares: how a request is read and how it is answered.

A request is the JSON of the HTTP body plus the ids the HTTP path carries in its URL; an
``Idempotency-Key`` (or ``Nats-Msg-Id``) header makes a resend answer like the first send. The
reply is ``{"ok": true, ...}`` or the error envelope the HTTP API uses, so a producer handles
one refusal format whichever transport it picked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faststream.nats import NatsBroker, NatsMessage
from pydantic import BaseModel

from adapters.envelope import Metadata
from domain.tasks import NodeId
from handlers.commands import CommandContext
from handlers.errors import EXPECTED, ErrorEnvelope, describe
from handlers.outcome import CommandOutcome

QUEUE = "jetflow-commands"

Handler = Callable[[dict[str, Any], CommandContext], Awaitable[dict[str, Any]]]


class NodeRef(BaseModel):
    node_id: NodeId


def outcome_reply(outcome: CommandOutcome, **extra: Any) -> dict[str, Any]:
    return {
        "ok": True,
        "aggregate_id": outcome.aggregate_id,
        "seq": outcome.last_seq,
        "events": list(outcome.events),
        **extra,
    }


def answer_verbs(broker: NatsBroker, prefix: str, verbs: dict[str, Handler]) -> None:
    """Subscribe ``<prefix>.<verb>`` for each verb, in one queue group so that every service
    process shares the requests instead of each answering all of them."""
    for verb, handler in verbs.items():
        _subscribe(broker, f"{prefix}.{verb}", handler)


def _context(message: NatsMessage) -> CommandContext:
    headers = message.headers or {}
    key = headers.get("Idempotency-Key") or headers.get("Nats-Msg-Id")
    actor = headers.get("Jetflow-Actor", "nats")
    return CommandContext(Metadata(actor=actor, correlation_id=message.correlation_id), key)


def _subscribe(broker: NatsBroker, subject: str, handler: Handler) -> None:
    @broker.subscriber(subject, queue=QUEUE, title=subject)
    async def receive(body: Any, message: NatsMessage) -> dict[str, Any]:
        if not isinstance(body, dict):
            return _refusal(400, "malformed_json", "The request body must be a JSON object")
        try:
            return await handler(body, _context(message))
        except EXPECTED as refused:
            described = describe(refused)
            assert described is not None
            return ErrorEnvelope(error=described).model_dump()


def _refusal(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": message, "fields": []}}
