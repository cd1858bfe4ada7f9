"""Render job rules, pure: given events, when a command, then events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from domain.base import Event, Invalid, StateConflict
from domain.render import (
    RENDER_JOB,
    CancelRenderJob,
    CreateRenderJob,
    ExpireRenderJob,
    FailFrame,
    FinishFrame,
    FrameFailed,
    FrameFinished,
    FrameRetried,
    FramesQueued,
    FrameStarted,
    LeaseFrame,
    PauseRenderJob,
    RenderJobCompleted,
    RenderJobFailed,
    RenderJobPaused,
    RenderJobStarted,
    RenderStatus,
    ResumeRenderJob,
    RetryFrame,
    TimeOutFrame,
)
from domain.render import (
    TestFramesPassed as PassedTestFrames,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HASH = "0" * 32


def create(**overrides: object) -> CreateRenderJob:
    body: dict[str, object] = {
        "job_id": "j1",
        "owner": "ann",
        "scene_file": "scene.ma",
        "render_engine": "maya",
        "total_frames": 5,
        "frame_timeout": 60,
        "max_frame_retries": 1,
    }
    return CreateRenderJob(**(body | overrides))


class Story:
    """Keeps a job's history and runs commands against it, like the command service does."""

    def __init__(self, command: CreateRenderJob) -> None:
        self.history: list[Event] = []
        self.when(command)

    def when(self, command: object) -> list[Event]:
        state = RENDER_JOB.fold(list(self.history))
        events = RENDER_JOB.decide(state, command)
        self.history.extend(events)
        return events

    @property
    def state(self):  # type: ignore[no-untyped-def]
        return RENDER_JOB.fold(list(self.history))

    def lease(self, node: str = "n1") -> int:
        events = self.when(LeaseFrame(job_id="j1", node_id=node, at=T0))
        started = [e for e in events if isinstance(e, FrameStarted)]
        return started[0].frame

    def finish(self, frame: int, node: str = "n1") -> list[Event]:
        return self.when(
            FinishFrame(
                job_id="j1",
                frame=frame,
                node_id=node,
                output_path=f"out/{frame}.exr",
                output_size=10,
                output_hash=HASH,
                render_time=2.0,
                at=T0,
            )
        )


def test_creating_a_job_queues_its_frames() -> None:
    story = Story(create(frame_start=10, frame_end=14, total_frames=None))
    assert story.history[1] == FramesQueued(job_id="j1", runs=[(10, 14)])


def test_test_frames_render_first_then_the_rest() -> None:
    story = Story(create(test_frames="4, 2"))
    events = story.when(LeaseFrame(job_id="j1", node_id="n1", at=T0))
    assert isinstance(events[0], RenderJobStarted)
    assert [story.lease() for _ in range(4)] == [4, 1, 3, 5]
    assert isinstance(events[1], FrameStarted) and events[1].frame == 2


def test_stop_after_test_waits_for_resume_then_queues_the_rest() -> None:
    story = Story(create(test_frames="3", stop_after_test=True))
    assert story.history[1] == FramesQueued(job_id="j1", runs=[(3, 3)])
    frame = story.lease()
    assert story.finish(frame)[-1] == PassedTestFrames(job_id="j1", waiting_for_resume=True)
    assert story.state.status is RenderStatus.TEST_COMPLETED
    with pytest.raises(StateConflict) as refused:
        story.lease()
    assert refused.value.code == "render_job_not_rendering"
    resumed = story.when(ResumeRenderJob(job_id="j1"))
    assert resumed[0] == FramesQueued(job_id="j1", runs=[(1, 2), (4, 5)])
    assert story.state.status is RenderStatus.RENDERING
    for _ in range(4):
        events = story.finish(story.lease())
    assert events[-1] == RenderJobCompleted(job_id="j1")


def test_a_failed_test_frame_fails_a_stop_after_test_job() -> None:
    story = Story(create(test_frames="1", stop_after_test=True, max_frame_retries=0))
    frame = story.lease()
    events = story.when(FailFrame(job_id="j1", frame=frame, node_id="n1", error="crash", at=T0))
    assert events == [
        FrameFailed(job_id="j1", frame=1, node_id="n1", error="crash", will_retry=False),
        RenderJobFailed(job_id="j1", reason="a test frame failed"),
    ]


def test_a_failed_frame_is_retried_up_to_the_limit() -> None:
    story = Story(create(total_frames=1, max_frame_retries=1))
    fail = FailFrame(job_id="j1", frame=1, node_id="n1", error="oom", at=T0)
    story.lease()
    assert story.when(fail)[1] == FrameRetried(job_id="j1", frame=1, manual=False)
    story.lease()
    assert story.when(fail)[-1] == RenderJobFailed(job_id="j1", reason="frames failed")


def test_manual_retry_reopens_a_failed_frame() -> None:
    story = Story(create(total_frames=2, max_frame_retries=0))
    story.lease()
    story.when(FailFrame(job_id="j1", frame=1, node_id="n1", error="x", at=T0))
    assert story.when(RetryFrame(job_id="j1", frame=1)) == [
        FrameRetried(job_id="j1", frame=1, manual=True)
    ]
    assert story.lease() == 1
    with pytest.raises(StateConflict):
        story.when(RetryFrame(job_id="j1", frame=2))


def test_frame_timeout_fails_the_frame_and_requeues_it() -> None:
    story = Story(create(total_frames=1))
    story.lease()
    with pytest.raises(StateConflict):
        story.when(TimeOutFrame(job_id="j1", frame=1, attempt=1, at=T0))
    late = T0 + timedelta(seconds=61)
    events = story.when(TimeOutFrame(job_id="j1", frame=1, attempt=1, at=late))
    assert events[0].error == "frame timeout"  # type: ignore[attr-defined]
    assert isinstance(events[1], FrameRetried)


def test_pause_stops_leases_and_resume_restores_the_state() -> None:
    story = Story(create())
    frame = story.lease()
    assert story.when(PauseRenderJob(job_id="j1")) == [RenderJobPaused(job_id="j1")]
    with pytest.raises(StateConflict):
        story.lease()
    assert isinstance(story.finish(frame)[0], FrameFinished)  # in-flight frames may finish
    story.when(ResumeRenderJob(job_id="j1"))
    assert story.state.status is RenderStatus.RENDERING
    with pytest.raises(StateConflict) as refused:
        story.when(ResumeRenderJob(job_id="j1"))
    assert refused.value.code == "render_job_not_resumable"


def test_cancel_mid_render_refuses_late_reports_and_further_transitions() -> None:
    story = Story(create())
    frame = story.lease()
    story.when(CancelRenderJob(job_id="j1", reason="wrong scene"))
    with pytest.raises(StateConflict) as late:
        story.finish(frame)
    assert late.value.code == "render_job_cancelled"
    for command in (PauseRenderJob(job_id="j1"), CancelRenderJob(job_id="j1")):
        with pytest.raises(StateConflict):
            story.when(command)


def test_a_job_past_its_task_timeout_fails() -> None:
    story = Story(create(task_timeout=100))
    story.lease()
    with pytest.raises(StateConflict):
        story.when(ExpireRenderJob(job_id="j1", at=T0 + timedelta(seconds=99)))
    events = story.when(ExpireRenderJob(job_id="j1", at=T0 + timedelta(seconds=100)))
    assert events == [RenderJobFailed(job_id="j1", reason="task timeout")]


@pytest.mark.parametrize("value", ["abc", "1,x", "0", "-3", "1,,2"])
def test_bad_test_frames_are_field_errors(value: str) -> None:
    with pytest.raises(ValidationError) as invalid:
        create(test_frames=value)
    assert invalid.value.errors()[0]["loc"] == ("test_frames",)


def test_test_frames_outside_the_range_are_refused() -> None:
    with pytest.raises(Invalid) as refused:
        Story(create(test_frames="50"))
    assert refused.value.field == "test_frames"


def test_frame_ranges_are_checked() -> None:
    with pytest.raises(ValidationError):
        create(total_frames=10_001)
    with pytest.raises(ValidationError):
        create(frame_start=5, frame_end=3, total_frames=None)
