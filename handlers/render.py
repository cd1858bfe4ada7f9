"""Use cases of render jobs, shared by the HTTP routes and the ``cmd.render.*`` subjects."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, ConfigDict, Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid6 import uuid7

from adapters.sql import as_utc
from domain.base import CallbackUrl, DomainError, Invalid
from domain.hardware import HardwareConfig, match
from domain.render import (
    RENDER_JOB,
    CancelRenderJob,
    CreateRenderJob,
    Engine,
    ExpireRenderJob,
    FailFrame,
    FinishFrame,
    FrameStarted,
    FrameStatus,
    HardwareChoice,
    JobId,
    LeaseFrame,
    NodeId,
    PauseRenderJob,
    RenderStatus,
    ResumeRenderJob,
    RetryFrame,
    TestFrames,
    TimeOutFrame,
)
from domain.scenes import SCENE, RecordSceneAnalysis, SceneAnalysis, SceneHash
from handlers.commands import CommandContext, CommandService
from handlers.outcome import CommandOutcome
from handlers.timers import TIMER
from handlers.wire import WireModel
from jetflow_defaults import bundled
from projections.render import render_frames, render_jobs

LEASE_CANDIDATES = 16
DEFAULT_HARDWARE_FILE = bundled("hardware_configs.json")


def load_hardware_configs(path: Path | None = None) -> list[HardwareConfig]:
    raw = json.loads((path or DEFAULT_HARDWARE_FILE).read_text())
    return [HardwareConfig.model_validate(item) for item in raw]


class Request(WireModel):
    model_config = ConfigDict(populate_by_name=True)


class CreateRenderJobRequest(Request):
    owner: Annotated[str, StringConstraints(min_length=1, max_length=100)] = Field(
        validation_alias=AliasChoices("owner", "unionid")
    )
    scene_file: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = Field(
        default=None, validation_alias=AliasChoices("scene_file", "oss_file_path")
    )
    file_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    scene_file_hash: Annotated[str, StringConstraints(max_length=128)] | None = None
    render_engine: Engine
    renderer: Annotated[str, StringConstraints(max_length=64)] | None = None
    frame_start: Annotated[int, Field(ge=0)] = 1
    frame_end: Annotated[int, Field(ge=0)] | None = None
    total_frames: Annotated[int, Field(ge=1, le=10_000)] | None = None
    test_frames: TestFrames = None
    stop_after_test: bool = False
    priority: Annotated[int, Field(ge=0, le=10)] = 5
    ram: Annotated[int, Field(ge=4, le=512)] | None = None
    gpu_count: Annotated[int, Field(ge=0, le=8)] = 0
    hardware_config_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    frame_timeout: Annotated[int, Field(gt=0, le=7 * 86_400)] = 43_200
    task_timeout: Annotated[int, Field(gt=0, le=30 * 86_400)] = 86_400
    max_frame_retries: Annotated[int, Field(ge=0, le=10)] = 2
    cg_version: Annotated[str, StringConstraints(max_length=64)] | None = None
    plugins: dict[str, str] = {}
    callback_url: CallbackUrl | None = None


class FinishFrameRequest(Request):
    node_id: NodeId
    output_path: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    output_size: Annotated[int, Field(ge=0)]
    output_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    render_time: Annotated[float, Field(ge=0)]


class FailFrameRequest(Request):
    node_id: NodeId
    error: Annotated[str, StringConstraints(min_length=1, max_length=4_000)]


class CancelRenderJobRequest(Request):
    reason: Annotated[str, StringConstraints(max_length=1_000)] = ""


class SceneAnalysisRequest(SceneAnalysis):
    scene_file_hash: SceneHash


@dataclass(frozen=True)
class FrameLease:
    job_id: str
    frame: int
    attempt: int
    scene_file: str
    render_engine: str
    renderer: str | None
    deadline: datetime
    outcome: CommandOutcome


def _now() -> datetime:
    return datetime.now(UTC)


def resolve_hardware(
    configs: list[HardwareConfig], request: CreateRenderJobRequest
) -> HardwareChoice | None:
    if request.hardware_config_id is not None:
        chosen = next((c for c in configs if c.id == request.hardware_config_id), None)
        if chosen is None:
            raise Invalid(
                "unknown_hardware_config",
                f"No hardware config {request.hardware_config_id!r}",
                field="hardware_config_id",
            )
    else:
        chosen, _ = match(configs, request.ram, request.gpu_count)
        if chosen is None and (request.ram or request.gpu_count):
            raise Invalid(
                "no_matching_hardware",
                "No available hardware config has that much RAM and that many GPUs",
                field="ram",
            )
    if chosen is None:
        return None
    return HardwareChoice(
        id=chosen.id,
        config_name=chosen.config_name,
        ram=chosen.ram,
        gpu_count=chosen.gpu_count,
        price_per_hour=chosen.price_per_hour,
    )


async def create_render_job(
    commands: CommandService,
    configs: list[HardwareConfig],
    request: CreateRenderJobRequest,
    context: CommandContext,
) -> tuple[CommandOutcome, CreateRenderJob]:
    if request.scene_file is None and request.file_id is None:
        raise Invalid("scene_file_missing", "scene_file or file_id is required", field="scene_file")
    job_id = str(uuid7())
    fields = request.model_dump(exclude={"file_id", "hardware_config_id", "scene_file"})
    command = CreateRenderJob(
        job_id=job_id,
        scene_file=request.scene_file or f"upload:{request.file_id}",
        hardware=resolve_hardware(configs, request),
        **fields,
    )
    return await commands.execute(RENDER_JOB, job_id, command, context), command


class FrameScheduler:
    """Which jobs to offer frames from, most urgent first.

    The candidates come from the job projection, re-read at most every ``refresh_s`` (so a new,
    more urgent job is noticed quickly) or when every known candidate refuses; in between,
    leases go straight to the job aggregate, which is the one that decides.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], refresh_s: float = 0.5) -> None:
        self.sessions = sessions
        self.refresh_s = refresh_s
        self._candidates: list[tuple[str, str, str, str | None]] = []
        self._read_at = float("-inf")

    async def candidates(self, *, fresh: bool) -> list[tuple[str, str, str, str | None]]:
        now = time.monotonic()
        if fresh or now - self._read_at > self.refresh_s:
            async with self.sessions() as session:
                rows = await session.execute(
                    select(
                        render_jobs.c.job_id,
                        render_jobs.c.scene_file,
                        render_jobs.c.render_engine,
                        render_jobs.c.renderer,
                    )
                    .where(
                        render_jobs.c.status.in_((RenderStatus.QUEUED, RenderStatus.RENDERING)),
                        render_jobs.c.queued_frames > 0,
                    )
                    .order_by(
                        render_jobs.c.priority.desc(),
                        render_jobs.c.created_at,
                        render_jobs.c.job_id,
                    )
                    .limit(LEASE_CANDIDATES)
                )
            self._candidates = [(r[0], r[1], r[2], r[3]) for r in rows]
            self._read_at = now
        return list(self._candidates)

    def exhausted(self, job_id: str) -> None:
        self._candidates = [c for c in self._candidates if c[0] != job_id]


async def lease_frame(
    commands: CommandService,
    scheduler: FrameScheduler,
    node_id: NodeId,
    context: CommandContext,
) -> FrameLease | None:
    """The next frame for a node, from the most urgent job that can start one.

    The scheduler proposes jobs; the job aggregate picks the frame and refuses when the job is
    paused, waiting for its test frames, finished, or out of queued frames.
    """
    for fresh in (False, True):
        for job_id, scene_file, engine, renderer in await scheduler.candidates(fresh=fresh):
            now = _now()
            command = LeaseFrame(job_id=job_id, node_id=node_id, at=now)
            try:
                outcome = await commands.execute(RENDER_JOB, job_id, command, context, at=now)
            except DomainError:
                scheduler.exhausted(job_id)
                continue
            return await _granted(commands, outcome, job_id, scene_file, engine, renderer)
    return None


async def _granted(
    commands: CommandService,
    outcome: CommandOutcome,
    job_id: str,
    scene_file: str,
    engine: str,
    renderer: str | None,
) -> FrameLease:
    events = await commands.decided_events(RENDER_JOB, outcome)
    started = next(e for e in events if isinstance(e, FrameStarted))
    return FrameLease(
        job_id=job_id,
        frame=started.frame,
        attempt=started.attempt,
        scene_file=scene_file,
        render_engine=engine,
        renderer=renderer,
        deadline=started.deadline,
        outcome=outcome,
    )


async def finish_frame(
    commands: CommandService,
    job_id: JobId,
    frame: int,
    request: FinishFrameRequest,
    context: CommandContext,
) -> CommandOutcome:
    now = _now()
    command = FinishFrame(job_id=job_id, frame=frame, at=now, **request.model_dump())
    return await commands.execute(RENDER_JOB, job_id, command, context, at=now)


async def fail_frame(
    commands: CommandService,
    job_id: JobId,
    frame: int,
    request: FailFrameRequest,
    context: CommandContext,
) -> CommandOutcome:
    now = _now()
    command = FailFrame(job_id=job_id, frame=frame, at=now, **request.model_dump())
    return await commands.execute(RENDER_JOB, job_id, command, context, at=now)


async def retry_frame(
    commands: CommandService, job_id: JobId, frame: int, context: CommandContext
) -> CommandOutcome:
    command = RetryFrame(job_id=job_id, frame=frame)
    return await commands.execute(RENDER_JOB, job_id, command, context)


async def pause_job(
    commands: CommandService, job_id: JobId, context: CommandContext
) -> CommandOutcome:
    return await commands.execute(RENDER_JOB, job_id, PauseRenderJob(job_id=job_id), context)


async def resume_job(
    commands: CommandService, job_id: JobId, context: CommandContext
) -> CommandOutcome:
    return await commands.execute(RENDER_JOB, job_id, ResumeRenderJob(job_id=job_id), context)


async def cancel_job(
    commands: CommandService,
    job_id: JobId,
    request: CancelRenderJobRequest,
    context: CommandContext,
) -> CommandOutcome:
    command = CancelRenderJob(job_id=job_id, reason=request.reason)
    return await commands.execute(RENDER_JOB, job_id, command, context)


async def record_scene_analysis(
    commands: CommandService, request: SceneAnalysisRequest, context: CommandContext
) -> CommandOutcome:
    scene_hash = request.scene_file_hash.lower()
    analysis = SceneAnalysis.model_validate(request.model_dump(exclude={"scene_file_hash"}))
    command = RecordSceneAnalysis(scene_file_hash=scene_hash, analysis=analysis)
    return await commands.execute(SCENE, scene_hash, command, context)


async def time_out_frames(
    commands: CommandService, sessions: async_sessionmaker[AsyncSession], now: datetime
) -> int:
    """Fail every frame rendering past its frame_timeout (the job retries it if it may)."""
    async with sessions() as session:
        late = (
            await session.execute(
                select(
                    render_frames.c.job_id, render_frames.c.frame_number, render_frames.c.attempt
                )
                .where(
                    render_frames.c.status == FrameStatus.RENDERING,
                    render_frames.c.deadline < now,
                )
                .limit(1000)
            )
        ).all()
    return await commands.execute_each(
        RENDER_JOB,
        (
            (job_id, TimeOutFrame(job_id=job_id, frame=number, attempt=attempt, at=now))
            for job_id, number, attempt in late
        ),
        TIMER,
        at=now,
    )


async def expire_render_jobs(
    commands: CommandService, sessions: async_sessionmaker[AsyncSession], now: datetime
) -> int:
    """Fail every job that has been running for longer than its task_timeout."""
    async with sessions() as session:
        running = (
            await session.execute(
                select(
                    render_jobs.c.job_id, render_jobs.c.started_at, render_jobs.c.task_timeout
                ).where(
                    render_jobs.c.status.in_(
                        (RenderStatus.RENDERING, RenderStatus.PAUSED, RenderStatus.TEST_COMPLETED)
                    ),
                    render_jobs.c.started_at.is_not(None),
                )
            )
        ).all()
    return await commands.execute_each(
        RENDER_JOB,
        (
            (job_id, ExpireRenderJob(job_id=job_id, at=now))
            for job_id, started_at, task_timeout in running
            if (now - as_utc(started_at)).total_seconds() >= task_timeout
        ),
        TIMER,
        at=now,
    )
