"""HTTP routes of render jobs (seed: render-farm API), under /api/v1.

These routes speak the seed's envelopes: success is ``{"code", "message", "data"}`` and a refusal
carries the seed's numeric code with ``message``, ``detail`` and ``errors`` beside jetflow's own
``error`` object, so clients of either convention read it. What a refusal says is
``api.errors.refusal``'s, as on every other route; the seed handlers only render it, adding the
seed's own two: a missing field in a body validated by the handler has its own code (1001), and
a refused value is echoed.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from pydantic import BaseModel, Field, StringConstraints
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import Row, func, select

from adapters.idempotency import CommandOutcome
from api import consistency
from api.errors import REFUSED, ApiError, refusal
from api.http import (
    OPERATE,
    READ,
    SEQ_HEADER,
    WORK,
    IdempotencyKey,
    Page,
    PageSize,
    Rt,
    WaitForSeq,
    command_context,
    owned_by_caller,
    page_rows,
    path_id,
    scoped,
    utc,
    visible,
)
from domain.base import NotFound
from domain.hardware import match
from handlers.errors import ErrorBody
from handlers.render import (
    CancelRenderJobRequest,
    CreateRenderJobRequest,
    FailFrameRequest,
    FinishFrameRequest,
    SceneAnalysisRequest,
    cancel_job,
    create_render_job,
    fail_frame,
    finish_frame,
    lease_frame,
    pause_job,
    record_scene_analysis,
    resume_job,
    retry_frame,
)
from projections.render import RENDER, SCENES, frame_key, render_frames, render_jobs, scene_analyses

# ------------------------------------------------------------------ the seed's envelopes

SEED_CODES = {
    "malformed_json": 1000,
    "bad_request": 1000,
    "missing_field": 1001,
    "validation_error": 1002,
    "not_found": 2000,
    "frame_not_found": 2000,
    "scene_analysis_not_found": 2000,
    "no_matching_hardware_config": 2000,
    "render_job_not_found": 2001,
    "render_job_exists": 3001,
    "forbidden": 4000,
    "unauthorized": 4000,
    "rate_limited": 4000,
    "internal_error": 5000,
}
SEED_MESSAGES = {
    1000: "Parameter error",
    1001: "Required field missing",
    1002: "Field format error",
    2000: "Resource not found",
    2001: "Task not found",
    3000: "Resource conflict",
    3001: "Task already exists",
    4000: "Permission denied",
    5000: "Internal error",
}


def seed_code(body: ErrorBody) -> int:
    if body.code in SEED_CODES:
        return SEED_CODES[body.code]
    if body.status == 409:
        return 3000
    if body.status in (400, 422):
        return 1002
    if body.status == 404:
        return 2000
    return 5000


def seed_error(
    body: ErrorBody,
    headers: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
) -> Response[dict[str, Any]]:
    code = seed_code(body)
    status = 400 if body.status == 422 else body.status
    errors = [
        {
            "field": f.field,
            "message": f.message,
            **({"value": values[f.field]} if values and f.field in values else {}),
        }
        for f in body.fields
    ]
    content = {
        "code": code,
        "message": SEED_MESSAGES.get(code, body.message),
        "detail": body.message
        if not body.fields
        else "; ".join(f"{f.field}: {f.message}" for f in body.fields),
        "errors": errors,
        "error": {**body.model_dump(), "status": status},
    }
    return Response(content, status_code=status, media_type=MediaType.JSON, headers=headers)


def _seed_refusal(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    body, headers = refusal(request, exc)
    if not isinstance(exc, PydanticValidationError):
        return seed_error(body, headers)
    errors = exc.errors()
    if any(err["type"] == "missing" for err in errors):
        body = body.model_copy(update={"code": "missing_field"})
    values = {
        ".".join(str(p) for p in err["loc"]): err["input"]
        for err in errors
        if isinstance(err.get("input"), (str, int, float))
    }
    return seed_error(body, headers, values)


SEED_HANDLERS: dict[type[Exception], Any] = dict.fromkeys(REFUSED, _seed_refusal)


def ok(
    data: Any, message: str = "OK", status: int = 200, seq: int | None = None
) -> Response[dict[str, Any]]:
    headers = {SEQ_HEADER: str(seq)} if seq is not None else None
    return Response(
        {"code": status, "message": message, "data": data}, status_code=status, headers=headers
    )


def written(
    outcome: CommandOutcome, data: dict[str, Any], message: str, status: int = 202
) -> Response[dict[str, Any]]:
    return ok({**data, "seq": outcome.last_seq}, message, status, outcome.last_seq)


# ------------------------------------------------------------------ views


ASSUMED_FRAME_S = 60.0


def job_view(row: Row[Any], now: datetime) -> dict[str, Any]:
    m = row._mapping
    total = m["total_frames"]
    done = m["completed_frames"]
    avg = m["render_time_total"] / done if done else None
    price = m["price_per_hour"]
    estimated_cost = actual_cost = None
    if price is not None:
        estimated_cost = round(price * (avg or ASSUMED_FRAME_S) * total / 3600, 4)
        actual_cost = round(price * m["render_time_total"] / 3600, 4)
    estimated_completion = None
    if m["status"] == "rendering" and avg is not None:
        remaining = total - done - m["failed_frames"]
        parallel = max(1, m["rendering_frames"])
        estimated_completion = utc(now + timedelta(seconds=avg * remaining / parallel))
    elif m["status"] == "completed":
        estimated_completion = utc(m["completed_at"])
    return {
        "id": m["job_id"],
        "unionid": m["owner"],
        "status": m["status"],
        "progress": round(100 * done / total, 2) if total else 0.0,
        "scene_file": m["scene_file"],
        "scene_file_hash": m["scene_file_hash"],
        "render_engine": m["render_engine"],
        "renderer": m["renderer"],
        "priority": m["priority"],
        "frame_start": m["frame_start"],
        "frame_end": m["frame_end"],
        "test_frames": m["test_frames"],
        "stop_after_test": m["stop_after_test"],
        "test_frame_status": m["test_frame_status"],
        "ram": m["ram"],
        "gpu_count": m["gpu_count"],
        "hardware_config": (
            {
                "id": m["hardware_config_id"],
                "name": m["hardware_config_name"],
                "price_per_hour": price,
            }
            if m["hardware_config_id"]
            else None
        ),
        "frame_timeout": m["frame_timeout"],
        "task_timeout": m["task_timeout"],
        "cg_version": m["cg_version"],
        "plugins": json.loads(m["plugins"]),
        "total_frames": total,
        "queued_frames": m["queued_frames"],
        "rendering_frames": m["rendering_frames"],
        "completed_frames": done,
        "failed_frames": m["failed_frames"],
        "average_frame_time": round(avg, 3) if avg is not None else None,
        "estimated_cost": estimated_cost,
        "actual_cost": actual_cost,
        "failure_reason": m["failure_reason"],
        "created_at": utc(m["created_at"]),
        "started_at": utc(m["started_at"]),
        "completed_at": utc(m["completed_at"]),
        "estimated_completion": estimated_completion,
        "seq": m["last_seq"],
    }


STATUS_FIELDS = (
    "id",
    "status",
    "progress",
    "total_frames",
    "completed_frames",
    "failed_frames",
    "rendering_frames",
    "created_at",
    "started_at",
    "estimated_completion",
)


def frame_view(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        "id": m["frame_id"],
        "task_id": m["job_id"],
        "frame_number": m["frame_number"],
        "status": "completed" if m["status"] == "finished" else m["status"],
        "is_test_frame": m["is_test_frame"],
        "output_path": m["output_path"],
        "output_size": m["output_size"],
        "output_hash": m["output_hash"],
        "node_id": m["node_id"],
        "attempt": m["attempt"],
        "render_time": m["render_time"],
        "retry_count": m["retry_count"],
        "deadline": utc(m["deadline"]),
        "created_at": utc(m["created_at"]),
        "started_at": utc(m["started_at"]),
        "completed_at": utc(m["completed_at"]),
        "error_message": m["error_message"],
    }


def pick(view: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """The seed's field filtering: ``?fields=id,status,progress``."""
    if not fields:
        return view
    wanted = [f.strip() for f in fields.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in view]
    if unknown:
        raise ApiError(400, "validation_error", f"unknown fields: {', '.join(unknown)}")
    return {f: view[f] for f in wanted}


Fields = Annotated[
    str | None,
    QueryParameter(required=False, max_length=1000, description="comma-separated fields to return"),
]
SortBy = Literal["created_at", "priority", "status", "completed_frames", "total_frames"]


class BatchStatusRequest(BaseModel):
    task_ids: Annotated[
        list[Annotated[str, StringConstraints(max_length=128)]], Field(min_length=1, max_length=100)
    ]


class HardwareNeeds(BaseModel):
    ram: Annotated[int, Field(ge=0, le=4096)] | None = None
    gpu_count: Annotated[int, Field(ge=0, le=64)] = 0


async def _job_row(runtime: Any, job_id: str, request: Request[Any, Any, Any]) -> Row[Any]:
    async with runtime.sessions() as session:
        row = (
            await session.execute(select(render_jobs).where(render_jobs.c.job_id == job_id))
        ).first()
    if row is None or not visible(request, row.owner):
        raise NotFound("render_job_not_found", f"Render job {job_id} not found")
    return row


async def _wait(runtime: Any, seq: int | None, *projections: Any) -> None:
    if seq:
        await consistency.wait_for_seq(runtime, projections or (RENDER,), seq)


# ------------------------------------------------------------------ routes


class RenderController(Controller):
    path = "/api/v1"
    tags = ["render"]
    exception_handlers = SEED_HANDLERS

    @post(
        "/render-jobs",
        opt=OPERATE,
        status_code=HTTP_201_CREATED,
        summary="Create a render job",
        description="Body: see CreateRenderJobRequest (unionid, oss_file_path or file_id, "
        "render_engine, frame range or total_frames, test_frames, hardware needs, timeouts).",
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        data: JSONBody[dict[str, Any]],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        # Validated here rather than by Litestar so a field error can echo the value it refused,
        # as the seed's error format does.
        body = owned_by_caller(request, CreateRenderJobRequest.model_validate(data))
        configs = request.app.state.hardware_configs
        ctx = command_context(request, idempotency_key)
        outcome, command = await create_render_job(runtime.commands, configs, body, ctx)
        assert command.frame_end is not None
        total = command.frame_end - command.frame_start + 1
        hardware = command.hardware
        return written(
            outcome,
            {
                "id": outcome.aggregate_id,
                "unionid": command.owner,
                "status": "queued",
                "test_frames": command.test_frames,
                "total_frames": total,
                "hardware_config": hardware.model_dump() if hardware else None,
                "estimated_cost": round(hardware.price_per_hour * ASSUMED_FRAME_S * total / 3600, 4)
                if hardware
                else None,
            },
            "Render job created",
            status=HTTP_201_CREATED,
        )

    @get("/render-jobs", opt=READ, summary="Render jobs, paginated, sorted and filtered")
    async def list_jobs(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        page: Page = 1,
        page_size: PageSize = 20,
        sort_by: FromQuery[SortBy] = "created_at",
        order: FromQuery[Literal["asc", "desc"]] = "desc",
        status: FromQuery[str | None] = None,
        fields: Fields = None,
        wait_for_seq: WaitForSeq = None,
    ) -> Response[dict[str, Any]]:
        await _wait(runtime, wait_for_seq)
        column = render_jobs.c[sort_by]
        ordering = column.desc() if order == "desc" else column.asc()
        query = scoped(select(render_jobs), render_jobs.c.owner, request)
        query = query.order_by(ordering, render_jobs.c.job_id)
        count = scoped(select(func.count()).select_from(render_jobs), render_jobs.c.owner, request)
        if status:
            query = query.where(render_jobs.c.status == status)
            count = count.where(render_jobs.c.status == status)
        rows, total = await page_rows(runtime, query, count, page, page_size)
        now = datetime.now(UTC)
        return ok(
            {
                "items": [pick(job_view(r, now), fields) for r in rows],
                "total": total,
                "page": page,
                "page_size": page_size,
                "total_pages": math.ceil(total / page_size),
            }
        )

    @get("/render-jobs/{job_id:str}", opt=READ, summary="One render job (with ?fields= filtering)")
    async def get_job(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        job_id: FromPath[str],
        fields: Fields = None,
        wait_for_seq: WaitForSeq = None,
    ) -> Response[dict[str, Any]]:
        await _wait(runtime, wait_for_seq)
        return ok(
            pick(job_view(await _job_row(runtime, job_id, request), datetime.now(UTC)), fields)
        )

    @get(
        "/render-jobs/{job_id:str}/status", opt=READ, summary="Status and progress of a render job"
    )
    async def get_status(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        job_id: FromPath[str],
        wait_for_seq: WaitForSeq = None,
    ) -> Response[dict[str, Any]]:
        await _wait(runtime, wait_for_seq)
        view = job_view(await _job_row(runtime, job_id, request), datetime.now(UTC))
        return ok({k: view[k] for k in STATUS_FIELDS})

    @post(
        "/render-jobs/batch-status",
        opt=READ,
        status_code=200,
        summary="Status of many jobs at once",
    )
    async def batch_status(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        data: JSONBody[BatchStatusRequest],
        wait_for_seq: WaitForSeq = None,
    ) -> Response[dict[str, Any]]:
        await _wait(runtime, wait_for_seq)
        async with runtime.sessions() as session:
            rows = (
                await session.execute(
                    scoped(select(render_jobs), render_jobs.c.owner, request).where(
                        render_jobs.c.job_id.in_(data.task_ids)
                    )
                )
            ).all()
        now = datetime.now(UTC)
        found = {r.job_id: job_view(r, now) for r in rows}
        return ok(
            {
                "items": [
                    {k: found[i][k] for k in STATUS_FIELDS} for i in data.task_ids if i in found
                ],
                "missing": [i for i in data.task_ids if i not in found],
            }
        )

    @post(
        "/render-jobs/{job_id:str}/pause",
        opt=OPERATE,
        status_code=HTTP_202_ACCEPTED,
        summary="Pause a job",
    )
    async def pause(
        self, request: Request[Any, Any, Any], runtime: Rt, job_id: FromPath[str]
    ) -> Response[dict[str, Any]]:
        outcome = await pause_job(runtime.commands, path_id(job_id), command_context(request, None))
        return written(outcome, {"id": job_id, "status": "paused"}, "Render job paused")

    @post(
        "/render-jobs/{job_id:str}/resume",
        opt=OPERATE,
        status_code=HTTP_202_ACCEPTED,
        summary="Resume a job",
    )
    async def resume(
        self, request: Request[Any, Any, Any], runtime: Rt, job_id: FromPath[str]
    ) -> Response[dict[str, Any]]:
        outcome = await resume_job(
            runtime.commands, path_id(job_id), command_context(request, None)
        )
        return written(outcome, {"id": job_id, "status": "rendering"}, "Render job resumed")

    @post(
        "/render-jobs/{job_id:str}/cancel",
        opt=OPERATE,
        status_code=HTTP_202_ACCEPTED,
        summary="Cancel a job",
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        job_id: FromPath[str],
        data: JSONBody[CancelRenderJobRequest | None] = None,
    ) -> Response[dict[str, Any]]:
        ctx = command_context(request, None)
        outcome = await cancel_job(
            runtime.commands, path_id(job_id), data or CancelRenderJobRequest(), ctx
        )
        return written(outcome, {"id": job_id, "status": "cancelled"}, "Render job cancelled")

    @get("/render-jobs/{job_id:str}/frames", opt=READ, summary="Frames of a job, paginated")
    async def list_frames(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        job_id: FromPath[str],
        page: Page = 1,
        page_size: PageSize = 50,
        status: FromQuery[str | None] = None,
        wait_for_seq: WaitForSeq = None,
    ) -> Response[dict[str, Any]]:
        await _wait(runtime, wait_for_seq)
        await _job_row(runtime, job_id, request)
        query = select(render_frames).where(render_frames.c.job_id == job_id)
        count = (
            select(func.count()).select_from(render_frames).where(render_frames.c.job_id == job_id)
        )
        if status:
            stored = "finished" if status == "completed" else status
            query = query.where(render_frames.c.status == stored)
            count = count.where(render_frames.c.status == stored)
        query = query.order_by(render_frames.c.frame_number)
        rows, total = await page_rows(runtime, query, count, page, page_size)
        return ok(
            {
                "items": [frame_view(r) for r in rows],
                "total": total,
                "page": page,
                "page_size": page_size,
                "total_pages": math.ceil(total / page_size),
            }
        )

    @get("/render-jobs/{job_id:str}/frames/{frame:int}", opt=READ, summary="One frame")
    async def get_frame(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        job_id: FromPath[str],
        frame: FromPath[int],
        wait_for_seq: WaitForSeq = None,
    ) -> Response[dict[str, Any]]:
        await _wait(runtime, wait_for_seq)
        await _job_row(runtime, job_id, request)
        async with runtime.sessions() as session:
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
    )
    async def retry(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        job_id: FromPath[str],
        frame: FromPath[int],
    ) -> Response[dict[str, Any]]:
        outcome = await retry_frame(
            runtime.commands, path_id(job_id), frame, command_context(request, None)
        )
        return written(
            outcome, {"id": job_id, "frame_number": frame, "status": "queued"}, "Frame queued again"
        )

    @post(
        "/render-jobs/{job_id:str}/frames/{frame:int}/finish",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="A render node reports a finished frame",
    )
    async def finish(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        job_id: FromPath[str],
        frame: FromPath[int],
        data: JSONBody[FinishFrameRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        ctx = command_context(request, idempotency_key)
        outcome = await finish_frame(runtime.commands, path_id(job_id), frame, data, ctx)
        return written(
            outcome, {"id": job_id, "frame_number": frame, "status": "completed"}, "Frame finished"
        )

    @post(
        "/render-jobs/{job_id:str}/frames/{frame:int}/fail",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="A render node reports a failed frame",
    )
    async def fail(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        job_id: FromPath[str],
        frame: FromPath[int],
        data: JSONBody[FailFrameRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        ctx = command_context(request, idempotency_key)
        outcome = await fail_frame(runtime.commands, path_id(job_id), frame, data, ctx)
        return written(
            outcome,
            {"id": job_id, "frame_number": frame, "status": "failed"},
            "Frame failure recorded",
        )

    @post(
        "/render-nodes/{node_id:str}/lease",
        opt=WORK,
        status_code=200,
        summary="A render node takes the next frame (204 when none)",
    )
    async def lease(
        self, request: Request[Any, Any, Any], runtime: Rt, node_id: FromPath[str]
    ) -> Response[dict[str, Any] | None]:
        granted = await lease_frame(
            runtime.commands, runtime.frames, path_id(node_id), command_context(request, None)
        )
        if granted is None:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        return ok(
            {
                "task_id": granted.job_id,
                "frame_number": granted.frame,
                "attempt": granted.attempt,
                "scene_file": granted.scene_file,
                "render_engine": granted.render_engine,
                "renderer": granted.renderer,
                "deadline": granted.deadline.isoformat(),
                "seq": granted.outcome.last_seq,
            },
            "Frame leased",
            seq=granted.outcome.last_seq,
        )

    @get(
        "/render-jobs/{job_id:str}/assets",
        opt=READ,
        summary="Assets of a job's scene, from its analysis",
    )
    async def assets(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        job_id: FromPath[str],
        wait_for_seq: WaitForSeq = None,
    ) -> Response[dict[str, Any]]:
        await _wait(runtime, wait_for_seq, RENDER, SCENES)
        job = await _job_row(runtime, job_id, request)
        analysis = await _analysis(runtime, job.scene_file_hash) if job.scene_file_hash else None
        listed = [
            {
                "file_path": a["path"],
                "file_size": a.get("size"),
                "file_type": a.get("type"),
                "is_missing": not a["exists"],
            }
            for a in (analysis or {}).get("assets", [])
        ]
        return ok(
            {
                "task_id": job_id,
                "scene_file_hash": job.scene_file_hash,
                "assets": listed,
                "total_count": len(listed),
                "missing_count": sum(a["is_missing"] for a in listed),
            }
        )

    @get("/hardware-configs", opt=READ, summary="Hardware configurations")
    async def hardware(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        return ok([c.model_dump() for c in request.app.state.hardware_configs])

    @post(
        "/hardware-configs/match",
        opt=READ,
        status_code=200,
        summary="The smallest config that fits, and alternatives",
    )
    async def match_hardware(
        self, request: Request[Any, Any, Any], data: JSONBody[HardwareNeeds]
    ) -> Response[dict[str, Any]]:
        recommended, alternatives = match(
            request.app.state.hardware_configs, data.ram, data.gpu_count
        )
        if recommended is None:
            raise ApiError(
                404, "no_matching_hardware_config", "No available hardware config fits these needs"
            )
        return ok(
            {
                "recommended": recommended.model_dump(),
                "alternatives": [a.model_dump() for a in alternatives],
            }
        )

    @post(
        "/scene/analyse",
        opt=WORK,
        status_code=HTTP_201_CREATED,
        summary="Record a scene analysis by file hash",
    )
    async def analyse(
        self, request: Request[Any, Any, Any], runtime: Rt, data: JSONBody[SceneAnalysisRequest]
    ) -> Response[dict[str, Any]]:
        outcome = await record_scene_analysis(
            runtime.commands, data, command_context(request, None)
        )
        body = data.model_dump()
        body["scene_file_hash"] = outcome.aggregate_id
        body["asset_summary"] = _asset_summary(body["assets"])
        return written(outcome, body, "Scene analysis recorded", status=HTTP_201_CREATED)

    @get(
        "/scene/analyse/{scene_hash:str}",
        opt=READ,
        summary="A recorded scene analysis by file hash",
    )
    async def get_analysis(
        self, runtime: Rt, scene_hash: FromPath[str], wait_for_seq: WaitForSeq = None
    ) -> Response[dict[str, Any]]:
        await _wait(runtime, wait_for_seq, SCENES)
        async with runtime.sessions() as session:
            row = (
                await session.execute(
                    select(scene_analyses).where(
                        scene_analyses.c.scene_file_hash == scene_hash.lower()
                    )
                )
            ).first()
        if row is None:
            raise NotFound("scene_analysis_not_found", f"No analysis for scene {scene_hash}")
        analysis = json.loads(row.analysis)
        return ok(
            {
                **analysis,
                "scene_file_hash": row.scene_file_hash,
                "asset_summary": _asset_summary(analysis["assets"]),
                "analyzed_at": utc(row.analysed_at),
            }
        )


def _asset_summary(assets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "total_count": len(assets),
        "total_size": sum(a.get("size") or 0 for a in assets),
        "missing_count": sum(1 for a in assets if not a["exists"]),
    }


async def _analysis(runtime: Any, scene_hash: str) -> dict[str, Any] | None:
    async with runtime.sessions() as session:
        raw = await session.scalar(
            select(scene_analyses.c.analysis).where(
                scene_analyses.c.scene_file_hash == scene_hash.lower()
            )
        )
    return json.loads(raw) if raw else None


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (RenderController,)
