"""Render jobs and their frames (seed: render-farm task API).

A job owns its frames: every frame event is an event of the job, so the rules that span frames
(test frames gate the rest, a paused job starts no frame, the last frame ends the job) are
decided in one place. Job states::

    queued -> rendering -> completed | failed
       |  \\      |  ^
       |   +-> paused (resume returns to where it was)
       +-> test_completed (stop_after_test: waits for ResumeRenderJob)
    any non-terminal -> cancelled

The state is large (one entry per frame) and is updated in place by ``evolve``; ``decide`` only
reads it. Frames wait in two heaps (test frames first, then by number) so picking the next frame
costs O(log n).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from domain.base import (
    AGGREGATE_ID_PATTERN,
    Aggregate,
    CallbackUrl,
    Command,
    Event,
    Instant,
    Invalid,
    NotFound,
    StateConflict,
)

MAX_FRAMES = 10_000


def _parse_test_frames(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    try:
        frames = [int(part.strip()) for part in value.split(",")]
    except ValueError:
        raise ValueError("test_frames must be a frame number or a comma-separated list") from None
    if any(frame <= 0 for frame in frames):
        raise ValueError("test frame numbers must be greater than 0")
    return ",".join(str(frame) for frame in frames)


JobId = Annotated[str, StringConstraints(pattern=AGGREGATE_ID_PATTERN)]
NodeId = Annotated[str, StringConstraints(pattern=AGGREGATE_ID_PATTERN)]
TestFrames = Annotated[
    str | None, StringConstraints(max_length=100), AfterValidator(_parse_test_frames)
]
Engine = Literal["maya", "ue"]


class RenderStatus(StrEnum):
    QUEUED = "queued"
    RENDERING = "rendering"
    PAUSED = "paused"
    TEST_COMPLETED = "test_completed"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({RenderStatus.COMPLETED, RenderStatus.FAILED, RenderStatus.CANCELLED})


class FrameStatus(StrEnum):
    WAITING = "waiting"  # a non-test frame held back until the test frames pass
    QUEUED = "queued"
    RENDERING = "rendering"
    FINISHED = "finished"
    FAILED = "failed"


class HardwareChoice(Command):
    id: str
    config_name: str
    ram: int
    gpu_count: int
    price_per_hour: float


# ---------------------------------------------------------------- commands


class CreateRenderJob(Command):
    job_id: JobId
    owner: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    scene_file: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    scene_file_hash: Annotated[str, StringConstraints(max_length=128)] | None = None
    render_engine: Engine
    renderer: Annotated[str, StringConstraints(max_length=64)] | None = None
    frame_start: Annotated[int, Field(ge=0)] = 1
    frame_end: Annotated[int, Field(ge=0)] | None = None
    total_frames: Annotated[int, Field(ge=1, le=MAX_FRAMES)] | None = None
    test_frames: TestFrames = None
    stop_after_test: bool = False
    priority: Annotated[int, Field(ge=0, le=10)] = 5
    ram: Annotated[int, Field(ge=4, le=512)] | None = None
    gpu_count: Annotated[int, Field(ge=0, le=8)] = 0
    hardware: HardwareChoice | None = None
    frame_timeout: Annotated[int, Field(gt=0, le=7 * 86_400)] = 43_200
    task_timeout: Annotated[int, Field(gt=0, le=30 * 86_400)] = 86_400
    max_frame_retries: Annotated[int, Field(ge=0, le=10)] = 2
    cg_version: Annotated[str, StringConstraints(max_length=64)] | None = None
    plugins: dict[str, str] = {}
    callback_url: CallbackUrl | None = None

    @model_validator(mode="after")
    def _one_frame_range(self) -> CreateRenderJob:
        if self.frame_end is None:
            self.__dict__["frame_end"] = self.frame_start + (self.total_frames or 1) - 1
        assert self.frame_end is not None
        if self.frame_end < self.frame_start:
            raise ValueError("frame_end must not be before frame_start")
        count = self.frame_end - self.frame_start + 1
        if count > MAX_FRAMES:
            raise ValueError(f"a job has at most {MAX_FRAMES} frames")
        if self.total_frames is not None and self.total_frames != count:
            raise ValueError("total_frames does not match frame_start..frame_end")
        return self

    def test_frame_numbers(self) -> list[int]:
        return [int(n) for n in self.test_frames.split(",")] if self.test_frames else []


class LeaseFrame(Command):
    job_id: JobId
    node_id: NodeId
    at: Instant


class FinishFrame(Command):
    job_id: JobId
    frame: int
    node_id: NodeId
    output_path: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    output_size: Annotated[int, Field(ge=0)]
    output_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    render_time: Annotated[float, Field(ge=0)]
    at: Instant


class FailFrame(Command):
    job_id: JobId
    frame: int
    node_id: NodeId
    error: Annotated[str, StringConstraints(min_length=1, max_length=4_000)]
    at: Instant


class TimeOutFrame(Command):
    job_id: JobId
    frame: int
    attempt: int
    at: Instant


class RetryFrame(Command):
    job_id: JobId
    frame: int


class PauseRenderJob(Command):
    job_id: JobId


class ResumeRenderJob(Command):
    job_id: JobId


class CancelRenderJob(Command):
    job_id: JobId
    reason: Annotated[str, StringConstraints(max_length=1_000)] = ""


class ExpireRenderJob(Command):
    """Sent by the timer when a job has run past its task_timeout."""

    job_id: JobId
    at: Instant


# ---------------------------------------------------------------- events


class RenderJobCreated(Event):
    job_id: str
    owner: str
    scene_file: str
    scene_file_hash: str | None
    render_engine: str
    renderer: str | None
    frame_start: int
    frame_end: int
    test_frames: list[int]
    stop_after_test: bool
    priority: int
    ram: int | None
    gpu_count: int
    hardware: HardwareChoice | None
    frame_timeout: int
    task_timeout: int
    max_frame_retries: int
    cg_version: str | None
    plugins: dict[str, str]
    callback_url: str | None = None


class FramesQueued(Event):
    """Frames ready to render, as inclusive ``[first, last]`` runs to keep the event small."""

    job_id: str
    runs: list[tuple[int, int]]


class RenderJobStarted(Event):
    job_id: str
    at: datetime


class FrameStarted(Event):
    job_id: str
    frame: int
    node_id: str
    attempt: int
    deadline: datetime


class FrameFinished(Event):
    job_id: str
    frame: int
    node_id: str
    output_path: str
    output_size: int
    output_hash: str
    render_time: float


class FrameFailed(Event):
    job_id: str
    frame: int
    node_id: str | None
    error: str
    will_retry: bool


class FrameRetried(Event):
    job_id: str
    frame: int
    manual: bool


class TestFramesPassed(Event):
    job_id: str
    waiting_for_resume: bool


class RenderJobPaused(Event):
    job_id: str


class RenderJobResumed(Event):
    job_id: str


class RenderJobCancelled(Event):
    job_id: str
    reason: str


class RenderJobCompleted(Event):
    job_id: str


class RenderJobFailed(Event):
    job_id: str
    reason: str


# ---------------------------------------------------------------- state


@dataclass
class FrameState:
    is_test: bool
    status: FrameStatus = FrameStatus.WAITING
    attempt: int = 0
    retries: int = 0
    node_id: str | None = None
    deadline: datetime | None = None


@dataclass
class RenderJobState:
    exists: bool = False
    owner: str | None = None
    status: RenderStatus = RenderStatus.QUEUED
    resume_to: RenderStatus = RenderStatus.QUEUED
    stop_after_test: bool = False
    frame_timeout: int = 0
    task_timeout: int = 0
    max_frame_retries: int = 0
    started_at: datetime | None = None
    frames: dict[int, FrameState] = field(default_factory=dict)
    queued_tests: list[int] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)
    test_open: int = 0  # test frames neither finished nor permanently failed
    open_frames: int = 0  # frames neither finished nor permanently failed
    failed_frames: int = 0
    callback_url: str | None = None

    def next_frame(self) -> int | None:
        if self.queued_tests:
            return self.queued_tests[0]
        return self.queued[0] if self.queued else None


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def decide(state: RenderJobState, command: Command) -> list[Event]:
    if isinstance(command, CreateRenderJob):
        return _create(state, command)
    if not state.exists:
        job_id = getattr(command, "job_id", "?")
        raise NotFound("render_job_not_found", f"Render job {job_id} not found")
    match command:
        case LeaseFrame():
            return _lease(state, command)
        case FinishFrame():
            frame = _held_frame(state, command.frame, command.node_id)
            finished = FrameFinished(
                job_id=command.job_id,
                frame=command.frame,
                node_id=command.node_id,
                output_path=command.output_path,
                output_size=command.output_size,
                output_hash=command.output_hash,
                render_time=command.render_time,
            )
            return [finished, *_after_frame_resolved(state, command.job_id, frame, failed=False)]
        case FailFrame():
            _held_frame(state, command.frame, command.node_id)
            return _frame_failure(
                state, command.job_id, command.frame, command.node_id, command.error
            )
        case TimeOutFrame():
            frame = _frame(state, command.frame)
            _require_active(state, command.job_id)
            if frame.status is not FrameStatus.RENDERING or frame.attempt != command.attempt:
                raise StateConflict(
                    "frame_not_rendering", f"Frame {command.frame} is {frame.status}"
                )
            assert frame.deadline is not None
            if command.at < frame.deadline:
                raise StateConflict("frame_not_timed_out", f"Frame {command.frame} is on time")
            return _frame_failure(
                state, command.job_id, command.frame, frame.node_id, "frame timeout"
            )
        case RetryFrame():
            frame = _frame(state, command.frame)
            _require_active(state, command.job_id)
            if frame.status is not FrameStatus.FAILED:
                raise StateConflict(
                    "frame_not_failed", f"Frame {command.frame} is {frame.status}, not failed"
                )
            return [FrameRetried(job_id=command.job_id, frame=command.frame, manual=True)]
        case PauseRenderJob():
            if state.status not in (RenderStatus.QUEUED, RenderStatus.RENDERING):
                raise StateConflict(
                    "render_job_not_pausable", f"A {state.status} job cannot be paused"
                )
            return [RenderJobPaused(job_id=command.job_id)]
        case ResumeRenderJob():
            if state.status is RenderStatus.PAUSED:
                return [RenderJobResumed(job_id=command.job_id)]
            if state.status is RenderStatus.TEST_COMPLETED:
                waiting = [n for n, f in state.frames.items() if f.status is FrameStatus.WAITING]
                queued = (
                    [FramesQueued(job_id=command.job_id, runs=_runs(waiting))] if waiting else []
                )
                return [*queued, RenderJobResumed(job_id=command.job_id)]
            raise StateConflict("render_job_not_resumable", f"A {state.status} job cannot resume")
        case CancelRenderJob():
            if state.status in TERMINAL:
                raise StateConflict("render_job_finished", f"The job is already {state.status}")
            return [RenderJobCancelled(job_id=command.job_id, reason=command.reason)]
        case ExpireRenderJob():
            if state.status in TERMINAL or state.started_at is None:
                raise StateConflict("render_job_not_running", f"The job is {state.status}")
            if command.at < state.started_at + timedelta(seconds=state.task_timeout):
                raise StateConflict("render_job_on_time", "The job is within its task_timeout")
            return [RenderJobFailed(job_id=command.job_id, reason="task timeout")]
    raise Invalid("unknown_command", f"Render jobs do not handle {type(command).__name__}")


def _create(state: RenderJobState, command: CreateRenderJob) -> list[Event]:
    if state.exists:
        raise StateConflict("render_job_exists", f"Render job {command.job_id} already exists")
    assert command.frame_end is not None
    tests = command.test_frame_numbers()
    outside = [n for n in tests if not command.frame_start <= n <= command.frame_end]
    if outside:
        raise Invalid(
            "test_frames_out_of_range",
            f"test frames {outside} are outside {command.frame_start}..{command.frame_end}",
            field="test_frames",
        )
    created = RenderJobCreated(
        job_id=command.job_id,
        owner=command.owner,
        scene_file=command.scene_file,
        scene_file_hash=command.scene_file_hash,
        render_engine=command.render_engine,
        renderer=command.renderer,
        frame_start=command.frame_start,
        frame_end=command.frame_end,
        test_frames=sorted(set(tests)),
        stop_after_test=command.stop_after_test,
        priority=command.priority,
        ram=command.ram,
        gpu_count=command.gpu_count,
        hardware=command.hardware,
        frame_timeout=command.frame_timeout,
        task_timeout=command.task_timeout,
        max_frame_retries=command.max_frame_retries,
        cg_version=command.cg_version,
        plugins=command.plugins,
        callback_url=str(command.callback_url) if command.callback_url else None,
    )
    everything = range(command.frame_start, command.frame_end + 1)
    first = sorted(set(tests)) if tests and command.stop_after_test else list(everything)
    return [created, FramesQueued(job_id=command.job_id, runs=_runs(first))]


def _lease(state: RenderJobState, command: LeaseFrame) -> list[Event]:
    if state.status not in (RenderStatus.QUEUED, RenderStatus.RENDERING):
        raise StateConflict(
            "render_job_not_rendering", f"The job is {state.status}; no frame can start"
        )
    frame = state.next_frame()
    if frame is None:
        raise StateConflict("no_frame_queued", f"Render job {command.job_id} has no queued frame")
    events: list[Event] = []
    if state.status is RenderStatus.QUEUED:
        events.append(RenderJobStarted(job_id=command.job_id, at=command.at))
    events.append(
        FrameStarted(
            job_id=command.job_id,
            frame=frame,
            node_id=command.node_id,
            attempt=state.frames[frame].attempt + 1,
            deadline=command.at + timedelta(seconds=state.frame_timeout),
        )
    )
    return events


def _frame(state: RenderJobState, number: int) -> FrameState:
    frame = state.frames.get(number)
    if frame is None:
        raise NotFound("frame_not_found", f"Frame {number} is not part of this job")
    return frame


def _held_frame(state: RenderJobState, number: int, node_id: str) -> FrameState:
    frame = _frame(state, number)
    if state.status is RenderStatus.CANCELLED:
        raise StateConflict("render_job_cancelled", "The job was cancelled")
    if state.status in TERMINAL:
        raise StateConflict("render_job_finished", f"The job is already {state.status}")
    if frame.status is not FrameStatus.RENDERING or frame.node_id != node_id:
        raise StateConflict("frame_not_held", f"Frame {number} is not rendering on {node_id}")
    return frame


def _require_active(state: RenderJobState, job_id: str) -> None:
    if state.status in TERMINAL:
        raise StateConflict("render_job_finished", f"Render job {job_id} is {state.status}")


def _frame_failure(
    state: RenderJobState, job_id: str, number: int, node_id: str | None, error: str
) -> list[Event]:
    frame = state.frames[number]
    will_retry = frame.retries < state.max_frame_retries
    failed = FrameFailed(
        job_id=job_id, frame=number, node_id=node_id, error=error, will_retry=will_retry
    )
    if will_retry:
        return [failed, FrameRetried(job_id=job_id, frame=number, manual=False)]
    return [failed, *_after_frame_resolved(state, job_id, frame, failed=True)]


def _after_frame_resolved(
    state: RenderJobState, job_id: str, frame: FrameState, *, failed: bool
) -> list[Event]:
    """What the job does once a frame is finished or has failed for good."""
    if frame.is_test and failed and state.stop_after_test:
        return [RenderJobFailed(job_id=job_id, reason="a test frame failed")]
    if state.open_frames == 1:
        if state.failed_frames + int(failed):
            return [RenderJobFailed(job_id=job_id, reason="frames failed")]
        return [RenderJobCompleted(job_id=job_id)]
    if frame.is_test and state.test_open == 1 and state.stop_after_test:
        return [TestFramesPassed(job_id=job_id, waiting_for_resume=True)]
    return []


# ---------------------------------------------------------------- evolve


def evolve(state: RenderJobState, event: Event) -> RenderJobState:
    match event:
        case RenderJobCreated():
            tests = set(event.test_frames)
            frames = {
                n: FrameState(is_test=n in tests)
                for n in range(event.frame_start, event.frame_end + 1)
            }
            return RenderJobState(
                exists=True,
                owner=event.owner,
                stop_after_test=event.stop_after_test,
                frame_timeout=event.frame_timeout,
                task_timeout=event.task_timeout,
                max_frame_retries=event.max_frame_retries,
                frames=frames,
                test_open=len(tests),
                open_frames=len(frames),
                callback_url=event.callback_url,
            )
        case FramesQueued():
            for first, last in event.runs:
                for n in range(first, last + 1):
                    _enqueue(state, n)
        case RenderJobStarted():
            state.status = RenderStatus.RENDERING
            state.started_at = event.at
        case FrameStarted():
            frame = state.frames[event.frame]
            heap = state.queued_tests if frame.is_test else state.queued
            if heap and heap[0] == event.frame:
                heapq.heappop(heap)
            else:
                heap.remove(event.frame)
                heapq.heapify(heap)
            frame.status = FrameStatus.RENDERING
            frame.attempt = event.attempt
            frame.node_id = event.node_id
            frame.deadline = event.deadline
        case FrameFinished():
            _resolve(state, event.frame, FrameStatus.FINISHED)
        case FrameFailed():
            if not event.will_retry:
                _resolve(state, event.frame, FrameStatus.FAILED)
                state.failed_frames += 1
        case FrameRetried():
            frame = state.frames[event.frame]
            frame.retries += 1
            if event.manual:  # a permanently failed frame becomes open again
                state.failed_frames -= 1
                state.open_frames += 1
                state.test_open += int(frame.is_test)
            _enqueue(state, event.frame)
        case TestFramesPassed():
            state.status = RenderStatus.TEST_COMPLETED
        case RenderJobPaused():
            state.resume_to = state.status
            state.status = RenderStatus.PAUSED
        case RenderJobResumed():
            state.status = (
                state.resume_to if state.status is RenderStatus.PAUSED else RenderStatus.RENDERING
            )
        case RenderJobCancelled():
            state.status = RenderStatus.CANCELLED
        case RenderJobCompleted():
            state.status = RenderStatus.COMPLETED
        case RenderJobFailed():
            state.status = RenderStatus.FAILED
    return state


def _enqueue(state: RenderJobState, number: int) -> None:
    frame = state.frames[number]
    frame.status = FrameStatus.QUEUED
    frame.node_id = None
    frame.deadline = None
    heapq.heappush(state.queued_tests if frame.is_test else state.queued, number)


def _resolve(state: RenderJobState, number: int, status: FrameStatus) -> None:
    frame = state.frames[number]
    frame.status = status
    frame.node_id = None
    frame.deadline = None
    state.open_frames -= 1
    state.test_open -= int(frame.is_test)


RENDER_JOB = Aggregate[RenderJobState](
    name="render",
    initial=RenderJobState,
    decide=decide,
    evolve=evolve,
    events=(
        RenderJobCreated,
        FramesQueued,
        RenderJobStarted,
        FrameStarted,
        FrameFinished,
        FrameFailed,
        FrameRetried,
        TestFramesPassed,
        RenderJobPaused,
        RenderJobResumed,
        RenderJobCancelled,
        RenderJobCompleted,
        RenderJobFailed,
    ),
    creates=(CreateRenderJob,),
    owner_of=lambda state: state.owner,
)
