"""What every NATS command subject shares: who sent a request, how it is read and answered.

A request goes to ``<command>.<user>`` (``cmd.task.submit.alice``): the server lets each NATS user
publish only subjects ending in its own name (``adapters.nats_auth``), so the last token is the
authenticated sender, and the service takes the actor and the owner scope from it and from the
role ``jetflow nats-users create`` recorded, never from anything the caller wrote. The role is
checked here again, so a server configured by hand cannot widen what a role may do.

The body is the JSON of the HTTP body plus the ids the HTTP path carries in its URL; an
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
from adapters.nats_auth import COMMANDS, NatsAuthDir, NatsRole, NatsUser
from domain.access import Role, sees_everything
from domain.tasks import NodeId
from handlers.commands import CommandContext
from handlers.errors import EXPECTED, ErrorEnvelope, describe
from handlers.outcome import CommandOutcome

QUEUE = "jetflow-commands"

Handler = Callable[[dict[str, Any], CommandContext], Awaitable[dict[str, Any]]]

# The HTTP role whose reach a NATS role has: workers act on every owner's tasks, producers only
# on their own (as operators do).
ACTS_AS: dict[NatsRole, Role] = {NatsRole.worker: Role.worker, NatsRole.producer: Role.operator}


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


def answer_verbs(
    broker: NatsBroker, prefix: str, verbs: dict[str, Handler], users: NatsAuthDir
) -> None:
    """Subscribe ``<prefix>.<verb>.*`` for each verb, in one queue group so that every service
    process shares the requests instead of each answering all of them."""
    for verb, handler in verbs.items():
        _subscribe(broker, f"{prefix}.{verb}", handler, users)


def sender(subject: str, command: str, users: NatsAuthDir) -> NatsUser | None:
    """The active user named by the subject's last token, if its role may send ``command``."""
    user = users.active(subject.removeprefix(f"{command}."))
    if user is None or command not in COMMANDS[user.role]:
        return None
    return user


def _context(message: NatsMessage, user: NatsUser) -> CommandContext:
    headers = message.headers or {}
    key = headers.get("Idempotency-Key") or headers.get("Nats-Msg-Id")
    metadata = Metadata(actor=f"user:{user.name}", correlation_id=message.correlation_id)
    role = ACTS_AS[user.role]
    return CommandContext(metadata, key, None if sees_everything(role) else user.name)


def _subscribe(broker: NatsBroker, command: str, handler: Handler, users: NatsAuthDir) -> None:
    @broker.subscriber(f"{command}.*", queue=QUEUE, title=command)
    async def receive(body: Any, message: NatsMessage) -> dict[str, Any]:
        user = sender(message.raw_message.subject, command, users)
        if user is None:
            return _refusal(403, "forbidden", f"This NATS user may not send {command}")
        if not isinstance(body, dict):
            return _refusal(400, "malformed_json", "The request body must be a JSON object")
        try:
            return await handler(body, _context(message, user))
        except EXPECTED as refused:
            described = describe(refused)
            assert described is not None
            return ErrorEnvelope(error=described).model_dump()


def _refusal(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": message, "fields": []}}
