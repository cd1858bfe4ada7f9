"""The task and node rules, pure: given events, when a command, then events (or a refusal)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from domain.base import DomainError, Event, Gone, NotFound, StateConflict
from domain.nodes import (
    NODE,
    MarkNodeOffline,
    NodeHeartbeat,
    NodeJoined,
    NodeLoad,
    NodeResources,
    NodeWentOffline,
    RecordHeartbeat,
)
from domain.tasks import (
    TASK,
    AssignTask,
    CancelTask,
    CompleteTask,
    ExpireLease,
    FailTask,
    NodeOffer,
    ReportProgress,
    RequeueTask,
    Resources,
    SubmitTask,
    TaskAssigned,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskRequeued,
    TaskSubmitted,
    TaskTimedOut,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SUBMITTED = TaskSubmitted(
    task_id="t1",
    code="print(1)",
    timeout=60,
    resources=Resources(),
    priority=0,
    owner="ann",
    max_attempts=2,
)
DEADLINE = T0 + timedelta(seconds=90)
OFFER = NodeOffer()


def assigned(attempt: int = 1, node: str = "n1") -> TaskAssigned:
    return TaskAssigned(task_id="t1", node_id=node, attempt=attempt, lease_deadline=DEADLINE)


def when(given: list[Event], command: object) -> list[Event]:
    return TASK.decide(TASK.fold(given), command)


def test_submit_records_the_task() -> None:
    command = SubmitTask(task_id="t1", code="print(1)", timeout=60, owner="ann", max_attempts=2)
    assert when([], command) == [SUBMITTED]


def test_submit_twice_is_refused() -> None:
    with pytest.raises(StateConflict) as refused:
        when([SUBMITTED], SubmitTask(task_id="t1", code="x"))
    assert refused.value.code == "task_exists"


@pytest.mark.parametrize(
    ("field", "value"),
    [("code", ""), ("code", "   "), ("code", "x" * 10_001), ("timeout", 0), ("timeout", 86_401)],
)
def test_bad_submissions_never_become_commands(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as invalid:
        SubmitTask(**{"task_id": "t1", "code": "print(1)", field: value})
    assert invalid.value.errors()[0]["loc"] == (field,)


def test_lease_sets_a_deadline_of_timeout_plus_grace() -> None:
    events = when(
        [SUBMITTED], AssignTask(task_id="t1", node_id="n1", offer=OFFER, at=T0, lease_grace_s=30)
    )
    assert events == [assigned()]


@pytest.mark.parametrize(
    ("offer", "beyond"),
    [
        (NodeOffer(cpu=0.5), "cpu 1.0 > 0.5"),
        (NodeOffer(memory=256), "memory 512 MiB > 256 MiB"),
        (NodeOffer(timeout=30), "timeout 60 s > 30 s"),
    ],
)
def test_a_task_larger_than_the_offer_is_not_leased(offer: NodeOffer, beyond: str) -> None:
    with pytest.raises(StateConflict) as refused:
        when([SUBMITTED], AssignTask(task_id="t1", node_id="n1", offer=offer, at=T0))
    assert refused.value.code == "task_exceeds_offer"
    assert beyond in str(refused.value)


def test_network_is_leased_only_to_a_node_that_grants_it() -> None:
    asks = SUBMITTED.model_copy(update={"network": True})
    with pytest.raises(StateConflict) as refused:
        when([asks], AssignTask(task_id="t1", node_id="n1", offer=OFFER, at=T0))
    assert refused.value.code == "task_exceeds_offer"
    granting = NodeOffer(network=True)
    command = AssignTask(task_id="t1", node_id="n1", offer=granting, at=T0)
    assert when([asks], command) == [assigned()]


def test_only_pending_tasks_can_be_leased() -> None:
    with pytest.raises(StateConflict) as refused:
        when([SUBMITTED, assigned()], AssignTask(task_id="t1", node_id="n2", offer=OFFER, at=T0))
    assert refused.value.code == "task_not_pending"


def test_unknown_task_is_not_found() -> None:
    with pytest.raises(NotFound) as refused:
        when([], CancelTask(task_id="nope"))
    assert refused.value.code == "task_not_found"


def test_the_holder_completes_the_task() -> None:
    events = when([SUBMITTED, assigned()], CompleteTask(task_id="t1", node_id="n1", at=T0))
    assert events == [TaskCompleted(task_id="t1", node_id="n1", result="")]


@pytest.mark.parametrize(
    "command",
    [
        CompleteTask(task_id="t1", node_id="n2", at=T0),
        FailTask(task_id="t1", node_id="n2", at=T0, error="boom"),
        ReportProgress(task_id="t1", node_id="n2", at=T0),
    ],
)
def test_a_node_that_does_not_hold_the_task_is_refused(command: object) -> None:
    with pytest.raises(StateConflict) as refused:
        when([SUBMITTED, assigned()], command)
    assert refused.value.code == "task_not_held"


def test_a_result_after_the_lease_expired_is_gone() -> None:
    late = DEADLINE + timedelta(seconds=1)
    with pytest.raises(Gone) as refused:
        when([SUBMITTED, assigned()], CompleteTask(task_id="t1", node_id="n1", at=late))
    assert refused.value.code == "lease_expired"


def test_expired_lease_requeues_while_attempts_remain() -> None:
    expire = ExpireLease(task_id="t1", attempt=1, at=DEADLINE)
    events = when([SUBMITTED, assigned()], expire)
    assert events == [TaskTimedOut(task_id="t1", node_id="n1", attempt=1, requeued=True)]
    state = TASK.fold([SUBMITTED, assigned(), *events])
    assert state.status == "pending"


def test_expired_lease_on_the_last_attempt_times_the_task_out() -> None:
    given = [
        SUBMITTED,
        assigned(),
        TaskTimedOut(task_id="t1", node_id="n1", attempt=1, requeued=True),
        assigned(2),
    ]
    events = when(given, ExpireLease(task_id="t1", attempt=2, at=DEADLINE))
    assert events == [TaskTimedOut(task_id="t1", node_id="n1", attempt=2, requeued=False)]
    assert TASK.fold([*given, *events]).status == "timed_out"


def test_a_lease_cannot_expire_early_or_twice() -> None:
    with pytest.raises(StateConflict) as early:
        when([SUBMITTED, assigned()], ExpireLease(task_id="t1", attempt=1, at=T0))
    assert early.value.code == "lease_not_expired"
    with pytest.raises(StateConflict) as stale:
        when([SUBMITTED, assigned()], ExpireLease(task_id="t1", attempt=2, at=DEADLINE))
    assert stale.value.code == "lease_not_active"


def test_tasks_of_an_offline_node_are_requeued_or_failed_when_out_of_attempts() -> None:
    requeue = RequeueTask(task_id="t1", node_id="n1", reason="node n1 offline")
    assert when([SUBMITTED, assigned()], requeue) == [
        TaskRequeued(task_id="t1", node_id="n1", reason="node n1 offline")
    ]
    last_try = [
        SUBMITTED,
        assigned(),
        TaskRequeued(task_id="t1", node_id="n1", reason="x"),
        assigned(2),
    ]
    [event] = when(last_try, requeue)
    assert isinstance(event, TaskFailed)


def test_cancel_is_refused_once_finished() -> None:
    done = [SUBMITTED, assigned(), TaskCompleted(task_id="t1", node_id="n1", result="")]
    with pytest.raises(StateConflict):
        when(done, CancelTask(task_id="t1"))
    assert when([SUBMITTED], CancelTask(task_id="t1", reason="r")) == [
        TaskCancelled(task_id="t1", reason="r")
    ]


def test_a_new_node_joins_on_its_first_heartbeat_only() -> None:
    beat = RecordHeartbeat(node_id="n1", at=T0)
    first = NODE.decide(NODE.fold([]), beat)
    assert [type(e) for e in first] == [NodeJoined, NodeHeartbeat]
    assert NODE.decide(NODE.fold(first), beat) == [first[1]]


def test_a_silent_node_goes_offline_and_rejoins_on_heartbeat() -> None:
    history: list[Event] = [
        NodeJoined(node_id="n1"),
        NodeHeartbeat(node_id="n1", at=T0, resources=NodeResources(), current_load=NodeLoad()),
    ]
    with pytest.raises(DomainError) as alive:
        NODE.decide(NODE.fold(history), MarkNodeOffline(node_id="n1", at=T0, silence_s=10))
    assert alive.value.code == "node_alive"
    later = T0 + timedelta(seconds=11)
    offline = NODE.decide(NODE.fold(history), MarkNodeOffline(node_id="n1", at=later, silence_s=10))
    assert offline == [NodeWentOffline(node_id="n1", last_heartbeat_at=T0)]
    rejoin = NODE.decide(NODE.fold([*history, *offline]), RecordHeartbeat(node_id="n1", at=later))
    assert isinstance(rejoin[0], NodeJoined)
