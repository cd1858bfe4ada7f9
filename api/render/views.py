"""What render routes answer inside the seed's ``data``: jobs, frames, leases, hardware, scenes.

Estimates are derived at read time from the projection's counters and summed render times;
a job without observed frames is costed at ``ASSUMED_FRAME_S`` per frame.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import Row

from api.answers import Answer, Instant
from api.errors import ApiError
from domain.scenes import Asset, MissingAsset, SceneInfo

ASSUMED_FRAME_S = 60.0
T = TypeVar("T")
# A job with only the fields ``?fields=`` asked for, in the order asked.
Picked = dict[str, Any]


class RenderPage(Answer, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int
    total_pages: int

    @classmethod
    def of(cls, items: list[T], total: int, page: int, page_size: int) -> RenderPage[T]:
        return cls(
            items=items,
            total=total,
            page=page,
            page_size=page_size,
            total_pages=math.ceil(total / page_size),
        )


class JobHardware(Answer):
    id: str
    name: str | None
    price_per_hour: float | None


class JobView(Answer):
    id: str
    unionid: str
    status: str
    progress: float
    scene_file: str
    scene_file_hash: str | None
    render_engine: str
    renderer: str | None
    priority: int
    frame_start: int
    frame_end: int
    test_frames: str | None
    stop_after_test: bool
    test_frame_status: str | None
    ram: int | None
    gpu_count: int
    hardware_config: JobHardware | None
    frame_timeout: int
    task_timeout: int
    cg_version: str | None
    plugins: dict[str, Any]
    total_frames: int
    queued_frames: int
    rendering_frames: int
    completed_frames: int
    failed_frames: int
    average_frame_time: float | None
    estimated_cost: float | None
    actual_cost: float | None
    failure_reason: str | None
    created_at: Instant
    started_at: Instant | None
    completed_at: Instant | None
    estimated_completion: Instant | None
    seq: int


class JobStatus(Answer):
    """The part of a job a poller needs: ``/status`` and ``batch-status``."""

    id: str
    status: str
    progress: float
    total_frames: int
    completed_frames: int
    failed_frames: int
    rendering_frames: int
    created_at: Instant
    started_at: Instant | None
    estimated_completion: Instant | None

    @classmethod
    def of(cls, job: JobView) -> JobStatus:
        return cls(**{name: getattr(job, name) for name in cls.model_fields})


class BatchStatus(Answer):
    items: list[JobStatus]
    missing: list[str]


def job_view(row: Row[Any], now: datetime) -> JobView:
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
        estimated_completion = now + timedelta(seconds=avg * remaining / parallel)
    elif m["status"] == "completed":
        estimated_completion = m["completed_at"]
    hardware = None
    if m["hardware_config_id"]:
        hardware = JobHardware(
            id=m["hardware_config_id"], name=m["hardware_config_name"], price_per_hour=price
        )
    return JobView(
        id=m["job_id"],
        unionid=m["owner"],
        status=m["status"],
        progress=round(100 * done / total, 2) if total else 0.0,
        scene_file=m["scene_file"],
        scene_file_hash=m["scene_file_hash"],
        render_engine=m["render_engine"],
        renderer=m["renderer"],
        priority=m["priority"],
        frame_start=m["frame_start"],
        frame_end=m["frame_end"],
        test_frames=m["test_frames"],
        stop_after_test=m["stop_after_test"],
        test_frame_status=m["test_frame_status"],
        ram=m["ram"],
        gpu_count=m["gpu_count"],
        hardware_config=hardware,
        frame_timeout=m["frame_timeout"],
        task_timeout=m["task_timeout"],
        cg_version=m["cg_version"],
        plugins=json.loads(m["plugins"]),
        total_frames=total,
        queued_frames=m["queued_frames"],
        rendering_frames=m["rendering_frames"],
        completed_frames=done,
        failed_frames=m["failed_frames"],
        average_frame_time=round(avg, 3) if avg is not None else None,
        estimated_cost=estimated_cost,
        actual_cost=actual_cost,
        failure_reason=m["failure_reason"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        completed_at=m["completed_at"],
        estimated_completion=estimated_completion,
        seq=m["last_seq"],
    )


def pick(job: JobView, fields: str) -> Picked:
    """The seed's field filtering: ``?fields=id,status,progress``."""
    view = job.model_dump()
    wanted = [f.strip() for f in fields.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in view]
    if unknown:
        raise ApiError(400, "validation_error", f"unknown fields: {', '.join(unknown)}")
    return {f: view[f] for f in wanted}


class ChosenHardware(Answer):
    id: str
    config_name: str
    ram: int
    gpu_count: int
    price_per_hour: float


class CreatedJob(Answer):
    id: str
    unionid: str
    status: str
    test_frames: str | None
    total_frames: int
    hardware_config: ChosenHardware | None
    estimated_cost: float | None
    seq: int


class JobChanged(Answer):
    id: str
    status: str
    seq: int


class FrameView(Answer):
    id: str
    task_id: str
    frame_number: int
    status: str
    is_test_frame: bool
    output_path: str | None
    output_size: int | None
    output_hash: str | None
    node_id: str | None
    attempt: int
    render_time: float | None
    retry_count: int
    deadline: Instant | None
    created_at: Instant
    started_at: Instant | None
    completed_at: Instant | None
    error_message: str | None


def frame_view(row: Row[Any]) -> FrameView:
    m = row._mapping
    return FrameView(
        id=m["frame_id"],
        task_id=m["job_id"],
        frame_number=m["frame_number"],
        status="completed" if m["status"] == "finished" else m["status"],
        is_test_frame=m["is_test_frame"],
        output_path=m["output_path"],
        output_size=m["output_size"],
        output_hash=m["output_hash"],
        node_id=m["node_id"],
        attempt=m["attempt"],
        render_time=m["render_time"],
        retry_count=m["retry_count"],
        deadline=m["deadline"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        completed_at=m["completed_at"],
        error_message=m["error_message"],
    )


class FrameChanged(Answer):
    id: str
    frame_number: int
    status: str
    seq: int


class FrameLeased(Answer):
    task_id: str
    frame_number: int
    attempt: int
    scene_file: str
    render_engine: str
    renderer: str | None
    deadline: Instant
    seq: int


class AssetSummary(Answer):
    total_count: int
    total_size: int
    missing_count: int

    @classmethod
    def of(cls, assets: list[Asset]) -> AssetSummary:
        return cls(
            total_count=len(assets),
            total_size=sum(a.size or 0 for a in assets),
            missing_count=sum(1 for a in assets if not a.exists),
        )


class SceneAnalysisBody(Answer):
    """A scene analysis as recorded, with its hash and a summary of its assets."""

    scene_file: str
    scene_file_size: int | None
    scene_info: SceneInfo
    assets: list[Asset]
    missing: list[MissingAsset]
    scene_file_hash: str
    asset_summary: AssetSummary


class SceneAnalysisRecorded(SceneAnalysisBody):
    seq: int


class SceneAnalysisView(SceneAnalysisBody):
    analyzed_at: Instant


class JobAsset(Answer):
    file_path: str
    file_size: int | None
    file_type: str
    is_missing: bool


class JobAssets(Answer):
    task_id: str
    scene_file_hash: str | None
    assets: list[JobAsset]
    total_count: int
    missing_count: int
