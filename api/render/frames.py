"""A render job's frames: read them, retry a failed one, and the render node's side (lease,
finish, fail), which nodes may also use over NATS (``cmd.render.*``)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from sqlalchemy import func, select

from api.dependencies import Commands, Frames, ReadAfter, read_after
from api.http import (
    OPERATE,
    READ,
    WORK,
    IdempotencyKey,
    Page,
    PageSize,
    command_context,
    page_rows,
    path_id,
)
from api.render.envelope import (
    READ_REFUSALS,
    WRITE_REFUSALS,
    SeedController,
    SeedEnvelope,
    ok,
    written,
)
from api.render.jobs import job_row
from api.render.views import FrameChanged, FrameLeased, FrameView, RenderPage, frame_view
from domain.base import NotFound
from handlers.render import (
    FailFrameRequest,
    FinishFrameRequest,
    fail_frame,
    finish_frame,
    lease_frame,
    retry_frame,
)
from projections.render import RENDER, frame_key, render_frames


class FrameController(SeedController):
    dependencies = {"read_after": read_after(RENDER)}

    @get(
        "/render-jobs/{job_id:str}/frames",
        opt=READ,
        summary="Frames of a job, paginated",
        responses=READ_REFUSALS,
    )
    async def list_frames(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        job_id: FromPath[str],
        page: Page = 1,
        page_size: PageSize = 50,
        status: FromQuery[str | None] = None,
    ) -> Response[SeedEnvelope[RenderPage[FrameView]]]:
        await job_row(read_after, job_id, request)
        query = select(render_frames).where(render_frames.c.job_id == job_id)
        count = (
            select(func.count()).select_from(render_frames).where(render_frames.c.job_id == job_id)
        )
        if status:
            stored = "finished" if status == "completed" else status
            query = query.where(render_frames.c.status == stored)
            count = count.where(render_frames.c.status == stored)
        query = query.order_by(render_frames.c.frame_number)
        rows, total = await page_rows(read_after, query, count, page, page_size)
        return ok(RenderPage[FrameView].of([frame_view(r) for r in rows], total, page, page_size))

    @get(
        "/render-jobs/{job_id:str}/frames/{frame:int}",
        opt=READ,
        summary="One frame",
        responses=READ_REFUSALS,
    )
    async def get_frame(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        job_id: FromPath[str],
        frame: FromPath[int],
    ) -> Response[SeedEnvelope[FrameView]]:
        await job_row(read_after, job_id, request)
        async with read_after() as session:
            row = (
                await session.execute(
                    select(render_frames).where(
                        render_frames.c.frame_id == frame_key(job_id, frame)
                    )
                )
            ).first()
        if row is None:
            raise NotFound("frame_not_found", f"Frame {frame} is not part of render job {job_id}")
        return ok(frame_view(row))

    @post(
        "/render-jobs/{job_id:str}/frames/{frame:int}/retry",
        opt=OPERATE,
        status_code=HTTP_202_ACCEPTED,
        summary="Retry a failed frame",
        responses=WRITE_REFUSALS,
    )
    async def retry(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        job_id: FromPath[str],
        frame: FromPath[int],
    ) -> Response[SeedEnvelope[FrameChanged]]:
        ctx = command_context(request, None)
        outcome = await retry_frame(commands, path_id(job_id), frame, ctx)
        changed = FrameChanged(id=job_id, frame_number=frame, status="queued", seq=outcome.last_seq)
        return written(outcome, changed, "Frame queued again")

    @post(
        "/render-jobs/{job_id:str}/frames/{frame:int}/finish",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="A render node reports a finished frame",
        responses=WRITE_REFUSALS,
    )
    async def finish(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        job_id: FromPath[str],
        frame: FromPath[int],
        data: JSONBody[FinishFrameRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SeedEnvelope[FrameChanged]]:
        ctx = command_context(request, idempotency_key)
        outcome = await finish_frame(commands, path_id(job_id), frame, data, ctx)
        changed = FrameChanged(
            id=job_id, frame_number=frame, status="completed", seq=outcome.last_seq
        )
        return written(outcome, changed, "Frame finished")

    @post(
        "/render-jobs/{job_id:str}/frames/{frame:int}/fail",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="A render node reports a failed frame",
        responses=WRITE_REFUSALS,
    )
    async def fail(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        job_id: FromPath[str],
        frame: FromPath[int],
        data: JSONBody[FailFrameRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SeedEnvelope[FrameChanged]]:
        ctx = command_context(request, idempotency_key)
        outcome = await fail_frame(commands, path_id(job_id), frame, data, ctx)
        changed = FrameChanged(id=job_id, frame_number=frame, status="failed", seq=outcome.last_seq)
        return written(outcome, changed, "Frame failure recorded")

    @post(
        "/render-nodes/{node_id:str}/lease",
        opt=WORK,
        status_code=200,
        summary="A render node takes the next frame (204 when none)",
        responses={
            HTTP_204_NO_CONTENT: ResponseSpec(None, description="No frame is waiting"),
            **WRITE_REFUSALS,
        },
    )
    async def lease(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        frames: Frames,
        node_id: FromPath[str],
    ) -> Response[SeedEnvelope[FrameLeased] | None]:
        granted = await lease_frame(
            commands, frames, path_id(node_id), command_context(request, None)
        )
        if granted is None:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        leased = FrameLeased(
            task_id=granted.job_id,
            frame_number=granted.frame,
            attempt=granted.attempt,
            scene_file=granted.scene_file,
            render_engine=granted.render_engine,
            renderer=granted.renderer,
            deadline=granted.deadline,
            seq=granted.outcome.last_seq,
        )
        return ok(leased, "Frame leased", seq=granted.outcome.last_seq)
