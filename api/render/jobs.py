"""Render jobs (seed: render-farm API): create, list, read, poll, pause, resume, cancel."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED
from pydantic import ConfigDict, Field, StringConstraints
from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.dependencies import Commands, ReadAfter, read_after
from api.http import (
    OPERATE,
    READ,
    IdempotencyKey,
    Page,
    PageSize,
    command_context,
    owner_for_new,
    page_rows,
    path_id,
    scoped,
    visible,
)
from api.render.envelope import (
    READ_REFUSALS,
    WRITE_REFUSALS,
    SeedController,
    SeedEnvelope,
    ok,
    written,
)
from api.render.views import (
    ASSUMED_FRAME_S,
    BatchStatus,
    ChosenHardware,
    CreatedJob,
    JobChanged,
    JobStatus,
    JobView,
    Picked,
    RenderPage,
    job_view,
    pick,
)
from domain.base import NotFound
from handlers.render import (
    CancelRenderJobRequest,
    CreateRenderJobRequest,
    cancel_job,
    create_render_job,
    pause_job,
    resume_job,
)
from handlers.wire import WireModel
from projections.render import RENDER, render_jobs

Fields = Annotated[
    str | None,
    QueryParameter(required=False, max_length=1000, description="comma-separated fields to return"),
]
SortBy = Literal["created_at", "priority", "status", "completed_frames", "total_frames"]


class BatchStatusRequest(WireModel):
    """The seed's render API ignored unknown fields here, so its clients may send them."""

    model_config = ConfigDict(extra="ignore")

    task_ids: Annotated[
        list[Annotated[str, StringConstraints(max_length=128)]], Field(min_length=1, max_length=100)
    ]


async def job_row(
    sessions: async_sessionmaker[AsyncSession], job_id: str, request: Request[Any, Any, Any]
) -> Row[Any]:
    """A job's row; one the caller may not see is as missing as an unknown one."""
    async with sessions() as session:
        row = (
            await session.execute(select(render_jobs).where(render_jobs.c.job_id == job_id))
        ).first()
    if row is None or not visible(request, row.owner):
        raise NotFound("render_job_not_found", f"Render job {job_id} not found")
    return row


class RenderJobController(SeedController):
    dependencies = {"read_after": read_after(RENDER)}

    @post(
        "/render-jobs",
        opt=OPERATE,
        status_code=HTTP_201_CREATED,
        summary="Create a render job",
        description="Body: see CreateRenderJobRequest (unionid, oss_file_path or file_id, "
        "render_engine, frame range or total_frames, test_frames, hardware needs, timeouts).",
        responses=WRITE_REFUSALS,
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        data: JSONBody[dict[str, Any]],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SeedEnvelope[CreatedJob]]:
        # Validated here rather than by Litestar so a field error can echo the value it refused,
        # as the seed's error format does.
        body = CreateRenderJobRequest.model_validate(data)
        body = body.model_copy(update={"owner": owner_for_new(request, body.owner)})
        configs = request.app.state.hardware_configs
        ctx = command_context(request, idempotency_key)
        outcome, command = await create_render_job(commands, configs, body, ctx)
        assert command.frame_end is not None
        total = command.frame_end - command.frame_start + 1
        hardware = command.hardware
        created = CreatedJob(
            id=outcome.aggregate_id,
            unionid=command.owner,
            status="queued",
            test_frames=command.test_frames,
            total_frames=total,
            hardware_config=ChosenHardware(**hardware.model_dump()) if hardware else None,
            estimated_cost=round(hardware.price_per_hour * ASSUMED_FRAME_S * total / 3600, 4)
            if hardware
            else None,
            seq=outcome.last_seq,
        )
        return written(outcome, created, "Render job created", status=HTTP_201_CREATED)

    @get(
        "/render-jobs",
        opt=READ,
        summary="Render jobs, paginated, sorted and filtered",
        description="With `?fields=`, each item has only the fields named, in that order.",
        responses=READ_REFUSALS,
    )
    async def list_jobs(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        page: Page = 1,
        page_size: PageSize = 20,
        sort_by: FromQuery[SortBy] = "created_at",
        order: FromQuery[Literal["asc", "desc"]] = "desc",
        status: FromQuery[str | None] = None,
        fields: Fields = None,
    ) -> Response[SeedEnvelope[RenderPage[JobView]] | SeedEnvelope[RenderPage[Picked]]]:
        column = render_jobs.c[sort_by]
        ordering = column.desc() if order == "desc" else column.asc()
        query = scoped(select(render_jobs), render_jobs.c.owner, request)
        query = query.order_by(ordering, render_jobs.c.job_id)
        count = scoped(select(func.count()).select_from(render_jobs), render_jobs.c.owner, request)
        if status:
            query = query.where(render_jobs.c.status == status)
            count = count.where(render_jobs.c.status == status)
        rows, total = await page_rows(read_after, query, count, page, page_size)
        now = datetime.now(UTC)
        jobs = [job_view(r, now) for r in rows]
        if fields:
            picked = [pick(j, fields) for j in jobs]
            return ok(RenderPage[Picked].of(picked, total, page, page_size))
        return ok(RenderPage[JobView].of(jobs, total, page, page_size))

    @get(
        "/render-jobs/{job_id:str}",
        opt=READ,
        summary="One render job (with ?fields= filtering)",
        description="With `?fields=`, `data` has only the fields named, in that order.",
        responses=READ_REFUSALS,
    )
    async def get_job(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        job_id: FromPath[str],
        fields: Fields = None,
    ) -> Response[SeedEnvelope[JobView] | SeedEnvelope[Picked]]:
        job = job_view(await job_row(read_after, job_id, request), datetime.now(UTC))
        return ok(pick(job, fields)) if fields else ok(job)

    @get(
        "/render-jobs/{job_id:str}/status",
        opt=READ,
        summary="Status and progress of a render job",
        responses=READ_REFUSALS,
    )
    async def get_status(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        job_id: FromPath[str],
    ) -> Response[SeedEnvelope[JobStatus]]:
        job = job_view(await job_row(read_after, job_id, request), datetime.now(UTC))
        return ok(JobStatus.of(job))

    @post(
        "/render-jobs/batch-status",
        opt=READ,
        status_code=200,
        summary="Status of many jobs at once",
        responses=READ_REFUSALS,
    )
    async def batch_status(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        data: JSONBody[BatchStatusRequest],
    ) -> Response[SeedEnvelope[BatchStatus]]:
        async with read_after() as session:
            rows = (
                await session.execute(
                    scoped(select(render_jobs), render_jobs.c.owner, request).where(
                        render_jobs.c.job_id.in_(data.task_ids)
                    )
                )
            ).all()
        now = datetime.now(UTC)
        found = {r.job_id: JobStatus.of(job_view(r, now)) for r in rows}
        return ok(
            BatchStatus(
                items=[found[i] for i in data.task_ids if i in found],
                missing=[i for i in data.task_ids if i not in found],
            )
        )

    @post(
        "/render-jobs/{job_id:str}/pause",
        opt=OPERATE,
        status_code=HTTP_202_ACCEPTED,
        summary="Pause a job",
        responses=WRITE_REFUSALS,
    )
    async def pause(
        self, request: Request[Any, Any, Any], commands: Commands, job_id: FromPath[str]
    ) -> Response[SeedEnvelope[JobChanged]]:
        outcome = await pause_job(commands, path_id(job_id), command_context(request, None))
        changed = JobChanged(id=job_id, status="paused", seq=outcome.last_seq)
        return written(outcome, changed, "Render job paused")

    @post(
        "/render-jobs/{job_id:str}/resume",
        opt=OPERATE,
        status_code=HTTP_202_ACCEPTED,
        summary="Resume a job",
        responses=WRITE_REFUSALS,
    )
    async def resume(
        self, request: Request[Any, Any, Any], commands: Commands, job_id: FromPath[str]
    ) -> Response[SeedEnvelope[JobChanged]]:
        outcome = await resume_job(commands, path_id(job_id), command_context(request, None))
        changed = JobChanged(id=job_id, status="rendering", seq=outcome.last_seq)
        return written(outcome, changed, "Render job resumed")

    @post(
        "/render-jobs/{job_id:str}/cancel",
        opt=OPERATE,
        status_code=HTTP_202_ACCEPTED,
        summary="Cancel a job",
        responses=WRITE_REFUSALS,
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        job_id: FromPath[str],
        data: JSONBody[CancelRenderJobRequest | None] = None,
    ) -> Response[SeedEnvelope[JobChanged]]:
        ctx = command_context(request, None)
        outcome = await cancel_job(commands, path_id(job_id), data or CancelRenderJobRequest(), ctx)
        changed = JobChanged(id=job_id, status="cancelled", seq=outcome.last_seq)
        return written(outcome, changed, "Render job cancelled")
