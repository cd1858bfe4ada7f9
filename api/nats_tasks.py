"""``cmd.task.<verb>.<user>`` on NATS request/reply: the task commands for producers and workers
that do not speak HTTP (sender, request and reply format in ``api.nats_replies``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faststream.nats import NatsBroker
from pydantic import BaseModel

from api.nats_replies import Handler, NodeRef, answer_verbs, outcome_reply
from domain.tasks import NodeOffer, TaskId
from handlers.commands import CommandContext
from handlers.tasks import (
    CancelTaskRequest,
    HeartbeatRequest,
    ProgressRequest,
    ResultRequest,
    SubmitTaskRequest,
    cancel_task,
    heartbeat,
    lease_answer,
    lease_next_task,
    report_progress,
    report_result,
    submit_task,
)

if TYPE_CHECKING:
    from api.runtime import Runtime


class TaskRef(BaseModel):
    task_id: TaskId


def subscribe(broker: NatsBroker, runtime: Runtime) -> None:
    commands, sessions = runtime.commands, runtime.sessions
    lease_grace_s = runtime.settings.lease_grace_s

    async def submit(body: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        request = SubmitTaskRequest.model_validate(body)
        if ctx.owner_scope is not None:  # a producer's tasks are its own, whatever it wrote
            request = request.model_copy(update={"owner": ctx.owner_scope})
        outcome = await submit_task(commands, request, ctx)
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
        ref = NodeRef.model_validate({"node_id": body.pop("node_id", None)})
        offer = NodeOffer.model_validate(body)
        granted = await lease_next_task(
            commands, sessions, ref.node_id, offer, ctx, lease_grace_s=lease_grace_s
        )
        if granted is None:
            return {"ok": True, "task_id": None, "status": "no_tasks"}
        return outcome_reply(granted.outcome, **lease_answer(granted))

    verbs: dict[str, Handler] = {
        "submit": submit,
        "cancel": cancel,
        "progress": progress,
        "result": result,
        "heartbeat": beat,
        "lease": lease,
    }
    answer_verbs(broker, "cmd.task", verbs, runtime.nats_users)
