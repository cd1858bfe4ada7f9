"""``cmd.render.<verb>.<user>`` on NATS request/reply: the frame reports of render nodes, the
busiest producers (sender, request and reply format in ``api.nats_replies``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faststream.nats import NatsBroker
from pydantic import BaseModel

from api.nats_replies import Handler, NodeRef, answer_verbs, outcome_reply
from domain.render import JobId
from handlers.commands import CommandContext
from handlers.render import (
    FailFrameRequest,
    FinishFrameRequest,
    fail_frame,
    finish_frame,
    lease_frame,
)

if TYPE_CHECKING:
    from api.runtime import Runtime


class FrameRef(BaseModel):
    job_id: JobId
    frame: int


def subscribe(broker: NatsBroker, runtime: Runtime) -> None:
    commands, frames = runtime.commands, runtime.frames

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

    verbs: dict[str, Handler] = {"lease": lease, "finish": finish, "fail": fail}
    answer_verbs(broker, "cmd.render", verbs, runtime.nats_users)
