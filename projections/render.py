"""Read models of render jobs: job status and progress, the frame table, scene analyses.

Progress is kept as counters moved by each frame event (O(1) per event, never a recount of the
frames), plus the sum of observed render times from which estimates are derived at read time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.envelope import RecordedEvent
from domain.render import RENDER_JOB
from domain.scenes import SCENE
from projections.base import Projection, metadata
from projections.rows import RowBatch

render_jobs = Table(
    "render_jobs",
    metadata,
    Column("job_id", String(128), primary_key=True),
    Column("owner", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("scene_file", Text, nullable=False),
    Column("scene_file_hash", String(128)),
    Column("render_engine", String(8), nullable=False),
    Column("renderer", String(64)),
    Column("priority", Integer, nullable=False),
    Column("frame_start", Integer, nullable=False),
    Column("frame_end", Integer, nullable=False),
    Column("test_frames", String(100)),
    Column("stop_after_test", Boolean, nullable=False),
    Column("test_frame_status", String(16)),
    Column("ram", Integer),
    Column("gpu_count", Integer, nullable=False),
    Column("hardware_config_id", String(64)),
    Column("hardware_config_name", String(128)),
    Column("price_per_hour", Float),
    Column("frame_timeout", Integer, nullable=False),
    Column("task_timeout", Integer, nullable=False),
    Column("cg_version", String(64)),
    Column("plugins", Text, nullable=False),
    Column("total_frames", Integer, nullable=False),
    Column("queued_frames", Integer, nullable=False),
    Column("rendering_frames", Integer, nullable=False),
    Column("completed_frames", Integer, nullable=False),
    Column("failed_frames", Integer, nullable=False),
    Column("render_time_total", Float, nullable=False),
    Column("failure_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    Column("last_seq", BigInteger, nullable=False),
    Index("ix_render_jobs_queue", "status", "priority", "created_at"),
)

render_frames = Table(
    "render_frames",
    metadata,
    Column("frame_id", String(160), primary_key=True),
    Column("job_id", String(128), nullable=False),
    Column("frame_number", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("is_test_frame", Boolean, nullable=False),
    Column("node_id", String(128)),
    Column("attempt", Integer, nullable=False),
    Column("retry_count", Integer, nullable=False),
    Column("deadline", DateTime(timezone=True)),
    Column("output_path", Text),
    Column("output_size", BigInteger),
    Column("output_hash", String(32)),
    Column("render_time", Float),
    Column("error_message", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    Column("last_seq", BigInteger, nullable=False),
    Index("ix_render_frames_job", "job_id", "frame_number", unique=True),
    Index("ix_render_frames_deadline", "status", "deadline"),
)

scene_analyses = Table(
    "scene_analyses",
    metadata,
    Column("scene_file_hash", String(128), primary_key=True),
    Column("scene_file", Text, nullable=False),
    Column("analysis", Text, nullable=False),
    Column("analysed_at", DateTime(timezone=True), nullable=False),
    Column("last_seq", BigInteger, nullable=False),
)

# The counter each frame status is counted in (waiting frames are in none of them).
_COUNTER = {
    "queued": "queued_frames",
    "rendering": "rendering_frames",
    "finished": "completed_frames",
    "failed": "failed_frames",
}


def frame_key(job_id: str, number: int) -> str:
    return f"{job_id}:{number}"


class RenderRows:
    """The job and frame rows one batch touches."""

    def __init__(self) -> None:
        self.jobs = RowBatch(render_jobs)
        self.frames = RowBatch(render_frames)

    async def load(self, session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        await self.jobs.load(session, {e.aggregate_id for e in events})
        keys = {
            frame_key(e.aggregate_id, e.payload["frame"]) for e in events if "frame" in e.payload
        }
        await self.frames.load(session, keys)

    def move_frame(self, job_id: str, number: int, status: str, **values: object) -> None:
        key = frame_key(job_id, number)
        frame = self.frames.get(key)
        job = self.jobs.get(job_id)
        if frame is None or job is None:
            return
        counts: dict[str, object] = {}
        if old := _COUNTER.get(frame["status"]):
            counts[old] = job[old] - 1
        if new := _COUNTER.get(status):
            counts[new] = int(counts.get(new, job[new])) + 1  # type: ignore[call-overload]
        self.jobs.update(job_id, **counts)
        self.frames.update(key, status=status, **values)

    async def flush(self, session: AsyncSession) -> None:
        await self.jobs.flush(session)
        await self.frames.flush(session)


def _created(rows: RenderRows, event: RecordedEvent) -> None:
    p = event.payload
    hardware = p["hardware"] or {}
    rows.jobs.insert(
        {
            "job_id": p["job_id"],
            "owner": p["owner"],
            "status": "queued",
            "scene_file": p["scene_file"],
            "scene_file_hash": p["scene_file_hash"],
            "render_engine": p["render_engine"],
            "renderer": p["renderer"],
            "priority": p["priority"],
            "frame_start": p["frame_start"],
            "frame_end": p["frame_end"],
            "test_frames": ",".join(str(n) for n in p["test_frames"]) or None,
            "stop_after_test": p["stop_after_test"],
            "test_frame_status": "pending" if p["test_frames"] else None,
            "ram": p["ram"],
            "gpu_count": p["gpu_count"],
            "hardware_config_id": hardware.get("id"),
            "hardware_config_name": hardware.get("config_name"),
            "price_per_hour": hardware.get("price_per_hour"),
            "frame_timeout": p["frame_timeout"],
            "task_timeout": p["task_timeout"],
            "cg_version": p["cg_version"],
            "plugins": json.dumps(p["plugins"], sort_keys=True),
            "total_frames": p["frame_end"] - p["frame_start"] + 1,
            "queued_frames": 0,
            "rendering_frames": 0,
            "completed_frames": 0,
            "failed_frames": 0,
            "render_time_total": 0.0,
            "created_at": event.occurred_at,
            "last_seq": event.seq,
        }
    )
    tests = set(p["test_frames"])
    for number in range(p["frame_start"], p["frame_end"] + 1):
        rows.frames.insert(
            {
                "frame_id": frame_key(p["job_id"], number),
                "job_id": p["job_id"],
                "frame_number": number,
                "status": "waiting",
                "is_test_frame": number in tests,
                "attempt": 0,
                "retry_count": 0,
                "created_at": event.occurred_at,
                "last_seq": event.seq,
            }
        )


async def _load_queued_frames(
    session: AsyncSession, rows: RenderRows, event: RecordedEvent
) -> None:
    keys = [
        frame_key(event.aggregate_id, n)
        for first, last in event.payload["runs"]
        for n in range(first, last + 1)
    ]
    await rows.frames.load(session, keys)


def apply_render_event(rows: RenderRows, event: RecordedEvent) -> None:
    p = event.payload
    job_id = event.aggregate_id
    at = event.occurred_at
    seq = event.seq
    match event.type:
        case "RenderJobCreated":
            _created(rows, event)
        case "FramesQueued":
            for first, last in p["runs"]:
                for n in range(first, last + 1):
                    rows.move_frame(job_id, n, "queued", last_seq=seq)
        case "RenderJobStarted":
            rows.jobs.update(job_id, status="rendering", started_at=at, last_seq=seq)
        case "FrameStarted":
            rows.move_frame(
                job_id,
                p["frame"],
                "rendering",
                node_id=p["node_id"],
                attempt=p["attempt"],
                deadline=datetime.fromisoformat(p["deadline"]),
                started_at=at,
                error_message=None,
                last_seq=seq,
            )
        case "FrameFinished":
            rows.move_frame(
                job_id,
                p["frame"],
                "finished",
                node_id=p["node_id"],
                deadline=None,
                output_path=p["output_path"],
                output_size=p["output_size"],
                output_hash=p["output_hash"],
                render_time=p["render_time"],
                completed_at=at,
                last_seq=seq,
            )
            job = rows.jobs.get(job_id)
            if job is not None:
                total = job["render_time_total"] + p["render_time"]
                rows.jobs.update(job_id, render_time_total=total, last_seq=seq)
        case "FrameFailed":
            values = {"error_message": p["error"], "deadline": None, "last_seq": seq}
            if p["will_retry"]:
                frame = rows.frames.get(frame_key(job_id, p["frame"]))
                if frame is not None:
                    rows.frames.update(frame_key(job_id, p["frame"]), **values)
            else:
                rows.move_frame(job_id, p["frame"], "failed", completed_at=at, **values)
        case "FrameRetried":
            frame = rows.frames.get(frame_key(job_id, p["frame"]))
            retries = frame["retry_count"] + 1 if frame else 0
            rows.move_frame(job_id, p["frame"], "queued", retry_count=retries, last_seq=seq)
        case "TestFramesPassed":
            rows.jobs.update(
                job_id, status="test_completed", test_frame_status="completed", last_seq=seq
            )
        case "RenderJobPaused":
            rows.jobs.update(job_id, status="paused", last_seq=seq)
        case "RenderJobResumed":
            rows.jobs.update(job_id, status="rendering", last_seq=seq)
        case "RenderJobCancelled":
            rows.jobs.update(
                job_id,
                status="cancelled",
                failure_reason=p["reason"] or None,
                completed_at=at,
                last_seq=seq,
            )
        case "RenderJobCompleted":
            rows.jobs.update(job_id, status="completed", completed_at=at, last_seq=seq)
            _settle_test_status(rows, job_id, "completed")
        case "RenderJobFailed":
            rows.jobs.update(
                job_id, status="failed", failure_reason=p["reason"], completed_at=at, last_seq=seq
            )
            _settle_test_status(rows, job_id, "failed" if "test" in p["reason"] else None)


def _settle_test_status(rows: RenderRows, job_id: str, status: str | None) -> None:
    job = rows.jobs.get(job_id)
    if job is not None and job["test_frame_status"] == "pending" and status is not None:
        rows.jobs.update(job_id, test_frame_status=status)


async def apply_render_batch(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
    rows = RenderRows()
    await rows.load(session, events)
    for event in events:
        if event.type == "FramesQueued":
            await _load_queued_frames(session, rows, event)
        apply_render_event(rows, event)
    await rows.flush(session)


def apply_scene_event(rows: RowBatch, event: RecordedEvent) -> None:
    p = event.payload
    row = {
        "scene_file": p["scene_file"],
        "analysis": json.dumps(p["analysis"], sort_keys=True),
        "analysed_at": event.occurred_at,
        "last_seq": event.seq,
    }
    if rows.get(event.aggregate_id) is None:
        rows.insert({"scene_file_hash": event.aggregate_id, **row})
    else:
        rows.update(event.aggregate_id, **row)


async def apply_scene_batch(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
    rows = RowBatch(scene_analyses)
    await rows.load(session, {e.aggregate_id for e in events})
    for event in events:
        apply_scene_event(rows, event)
    await rows.flush(session)


RENDER = Projection(
    name="render",
    source=RENDER_JOB,
    tables=(render_jobs, render_frames),
    apply=apply_render_batch,
)
SCENES = Projection(name="scenes", source=SCENE, tables=(scene_analyses,), apply=apply_scene_batch)
