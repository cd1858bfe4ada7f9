"""Commands on NATS request/reply (``cmd.task.<verb>``, ``cmd.render.<verb>``) for producers
that do not speak HTTP.

Each request is the same JSON as the HTTP body plus the ids the HTTP path carries in its URL;
an ``Idempotency-Key`` (or ``Nats-Msg-Id``) header makes a resend answer like the first send.
The reply is ``{"ok": true, ...}`` or the error envelope the HTTP API uses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faststream.nats import NatsBroker, NatsMessage
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.envelope import Metadata
from domain.render import JobId
from domain.tasks import NodeId, TaskId
from handlers.commands import CommandContext, CommandService
from handlers.errors import EXPECTED, ErrorEnvelope, describe
from handlers.outcome import CommandOutcome
from handlers.render import (
    FailFrameRequest,
    FinishFrameRequest,
    FrameScheduler,
    fail_frame,
    finish_frame,
    lease_frame,
)
from handlers.tasks import (
    CancelTaskRequest,
    HeartbeatRequest,
    ProgressRequest,
    ResultRequest,
    SubmitTaskRequest,
    cancel_task,
    heartbeat,
    lease_next_task,
    report_progress,
    report_result,
    submit_task,
)

QUEUE = "jetflow-commands"


class TaskRef(BaseModel):
    task_id: TaskId


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


def _context(message: NatsMessage) -> CommandContext:
    headers = message.headers or {}
    key = headers.get("Idempotency-Key") or headers.get("Nats-Msg-Id")
    actor = headers.get("Jetflow-Actor", "nats")
    return CommandContext(Metadata(actor=actor, correlation_id=message.correlation_id), key)


Handler = Callable[[dict[str, Any], CommandContext], Awaitable[dict[str, Any]]]


def register_command_subjects(
    broker: NatsBroker,
    commands: CommandService,
    sessions: async_sessionmaker[AsyncSession],
    frames: FrameScheduler,
    *,
    lease_grace_s: float,
) -> None:
    async def submit(body: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        outcome = await submit_task(commands, SubmitTaskRequest.model_validate(body), ctx)
        return outcome_reply(outcome, task_id=outcome.aggregate_id, status="pending")

    async def cancel(body: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        ref = TaskRef.model_validate({"task_id": body.pop("task_id", None)})
        request = CancelTaskRequest.model_validate(body)
        return outcome_reply(await cancel_task(commands, ref.task_id, request, ctx))

    async def progress(body: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        ref = TaskRef.model_validate({"task_id": body.pop("task_id", None)})
        request = ProgressRequest.model_validate(body)
        return outcome_reply(await report_progress(commands, ref.task_id, request, ctx))

    async def result(body: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        ref = TaskRef.model_validate({"task_id": body.pop("task_id", None)})
        request = ResultRequest.model_validate(body)
        return outcome_reply(await report_result(commands, ref.task_id, request, ctx))

    async def beat(body: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        ref = NodeRef.model_validate({"node_id": body.pop("node_id", None)})
        request = HeartbeatRequest.model_validate(body)
        return outcome_reply(await heartbeat(commands, ref.node_id, request, ctx))

    async def lease(body: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        ref = NodeRef.model_validate(body)
        granted = await lease_next_task(
            commands, sessions, ref.node_id, ctx, lease_grace_s=lease_grace_s
        )
        if granted is None:
            return {"ok": True, "task_id": None, "status": "no_tasks"}
        return outcome_reply(
            granted.outcome,
            task_id=granted.task_id,
            code=granted.code,
            timeout=granted.timeout,
            resources={"cpu": granted.cpu, "memory": granted.memory},
            attempt=granted.attempt,
            lease_deadline=granted.lease_deadline.isoformat(),
        )

    verbs: dict[str, Handler] = {
        "submit": submit,
        "cancel": cancel,
        "progress": progress,
        "result": result,
        "heartbeat": beat,
        "lease": lease,
    }
    for verb, handler in verbs.items():
        _subscribe(broker, f"cmd.task.{verb}", handler)
    _register_render_subjects(broker, commands, frames)


class FrameRef(BaseModel):
    job_id: JobId
    frame: int


def _register_render_subjects(
    broker: NatsBroker, commands: CommandService, frames: FrameScheduler
) -> None:
    """``cmd.render.<verb>``: the frame reports of render nodes, the busiest producers."""

    async def lease(body: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        ref = NodeRef.model_validate(body)
        granted = await lease_frame(commands, frames, ref.node_id, ctx)
        if granted is None:
            return {"ok": True, "job_id": None, "status": "no_frames"}
        return outcome_reply(
            granted.outcome,
            job_id=granted.job_id,
            frame=granted.frame,
            attempt=granted.attempt,
            scene_file=granted.scene_file,
            render_engine=granted.render_engine,
            renderer=granted.renderer,
            deadline=granted.deadline.isoformat(),
        )

    async def finish(body: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        ref = FrameRef.model_validate(
            {"job_id": body.pop("job_id", None), "frame": body.pop("frame", None)}
        )
        request = FinishFrameRequest.model_validate(body)
        return outcome_reply(await finish_frame(commands, ref.job_id, ref.frame, request, ctx))

    async def fail(body: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        ref = FrameRef.model_validate(
            {"job_id": body.pop("job_id", None), "frame": body.pop("frame", None)}
        )
        request = FailFrameRequest.model_validate(body)
        return outcome_reply(await fail_frame(commands, ref.job_id, ref.frame, request, ctx))

    for verb, handler in {"lease": lease, "finish": finish, "fail": fail}.items():
        _subscribe(broker, f"cmd.render.{verb}", handler)


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
