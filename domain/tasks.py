"""Compute tasks: code submitted by an owner, leased by worker nodes, run at most once at a time.

The life cycle (seed: idle-compute scheduler, modernised)::

    pending -> assigned -> running -> completed | failed
       ^          |           |
       +-- lease expired / node offline (requeue while attempts remain, else timed_out/failed)
    pending | assigned | running -> cancelled
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, StringConstraints

from domain.base import (
    AGGREGATE_ID_PATTERN,
    Aggregate,
    CallbackUrl,
    Command,
    Event,
    Gone,
    Instant,
    Invalid,
    NotFound,
    Seconds,
    StateConflict,
)

MAX_CODE_CHARS = 10_000
MAX_TIMEOUT_S = 86_400
MAX_RESULT_CHARS = 65_536


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("Code cannot be empty")
    return value


TaskId = Annotated[str, StringConstraints(pattern=AGGREGATE_ID_PATTERN)]
NodeId = Annotated[str, StringConstraints(pattern=AGGREGATE_ID_PATTERN)]
Code = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_CODE_CHARS),
    AfterValidator(_not_blank),
]
TimeoutSeconds = Annotated[int, Field(gt=0, le=MAX_TIMEOUT_S)]
Priority = Annotated[int, Field(ge=0, le=10)]
MaxAttempts = Annotated[int, Field(ge=1, le=10)]
Percent = Annotated[float, Field(ge=0, le=100)]
ResultText = Annotated[str, StringConstraints(max_length=MAX_RESULT_CHARS)]


Cpu = Annotated[float, Field(gt=0, le=256, description="cores")]
MemoryMiB = Annotated[int, Field(gt=0, le=1_048_576, description="MiB")]


class Resources(Command):
    """What a task needs from a node (value object shared by commands and events)."""

    cpu: Cpu = 1.0
    memory: MemoryMiB = 512


class NodeOffer(Command):
    """The largest task a node will run, sent with every lease request.

    The node's own caps, not the submitter's wishes, bound what its sandbox grants; a task that
    asks for more than the offer is never leased to that node. The defaults are a task's
    defaults, so a node that states nothing only gets tasks that asked for nothing special.
    """

    cpu: Cpu = 1.0
    memory: MemoryMiB = 512
    timeout: TimeoutSeconds = 300
    network: bool = Field(default=False, description="whether the node grants network access")


class TaskStatus(StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


ACTIVE = frozenset({TaskStatus.ASSIGNED, TaskStatus.RUNNING})
FINISHED = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT}
)

# ---------------------------------------------------------------- commands


class SubmitTask(Command):
    task_id: TaskId
    code: Code
    timeout: TimeoutSeconds = 300
    resources: Resources = field(default_factory=Resources)
    priority: Priority = 0
    owner: str = "anonymous"
    max_attempts: MaxAttempts = 3
    callback_url: CallbackUrl | None = None
    network: bool = False


class AssignTask(Command):
    task_id: TaskId
    node_id: NodeId
    offer: NodeOffer
    at: Instant
    lease_grace_s: Seconds = 30.0


class ReportProgress(Command):
    task_id: TaskId
    node_id: NodeId
    at: Instant
    percent: Percent = 0.0
    message: Annotated[str, StringConstraints(max_length=1_000)] = ""


class CompleteTask(Command):
    task_id: TaskId
    node_id: NodeId
    at: Instant
    result: ResultText = ""


class FailTask(Command):
    task_id: TaskId
    node_id: NodeId
    at: Instant
    error: ResultText


class ExpireLease(Command):
    task_id: TaskId
    attempt: int
    at: Instant


class RequeueTask(Command):
    """Sent when the node holding the task went offline."""

    task_id: TaskId
    node_id: NodeId
    reason: str


class CancelTask(Command):
    task_id: TaskId
    reason: Annotated[str, StringConstraints(max_length=1_000)] = ""


# ---------------------------------------------------------------- events


class TaskSubmitted(Event):
    """v2 added ``network``: whether the task asks for network access (no v1 task did; the
    upcaster says so for readers of raw payloads, such as the projections)."""

    schema_version: ClassVar[int] = 2
    task_id: str
    code: str
    timeout: int
    resources: Resources
    priority: int
    owner: str
    max_attempts: int
    callback_url: str | None = None
    network: bool = False

    @classmethod
    def upcast_v1(cls, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "network": False}


class TaskAssigned(Event):
    task_id: str
    node_id: str
    attempt: int
    lease_deadline: datetime


class TaskProgressed(Event):
    task_id: str
    node_id: str
    percent: float
    message: str


class TaskCompleted(Event):
    task_id: str
    node_id: str
    result: str


class TaskFailed(Event):
    task_id: str
    node_id: str
    error: str


class TaskTimedOut(Event):
    task_id: str
    node_id: str
    attempt: int
    requeued: bool


class TaskRequeued(Event):
    task_id: str
    node_id: str
    reason: str


class TaskCancelled(Event):
    task_id: str
    reason: str


# ---------------------------------------------------------------- state


@dataclass(frozen=True)
class TaskState:
    exists: bool = False
    owner: str | None = None
    status: TaskStatus = TaskStatus.PENDING
    timeout: int = 0
    resources: Resources = field(default_factory=Resources)
    network: bool = False
    max_attempts: int = 1
    attempt: int = 0
    node_id: str | None = None
    lease_deadline: datetime | None = None
    callback_url: str | None = None


def decide(state: TaskState, command: Command) -> list[Event]:
    match command:
        case SubmitTask():
            if state.exists:
                raise StateConflict("task_exists", f"Task {command.task_id} already exists")
            return [
                TaskSubmitted(
                    task_id=command.task_id,
                    code=command.code,
                    timeout=command.timeout,
                    resources=command.resources,
                    priority=command.priority,
                    owner=command.owner,
                    max_attempts=command.max_attempts,
                    callback_url=str(command.callback_url) if command.callback_url else None,
                    network=command.network,
                )
            ]
        case _ if not state.exists:
            task_id = getattr(command, "task_id", "?")
            raise NotFound("task_not_found", f"Task {task_id} not found")
        case AssignTask():
            if state.status is not TaskStatus.PENDING:
                raise StateConflict(
                    "task_not_pending", f"Task {command.task_id} is {state.status}, not pending"
                )
            if beyond := beyond_offer(state, command.offer):
                raise StateConflict(
                    "task_exceeds_offer",
                    f"Task {command.task_id} needs more than node {command.node_id} offers: "
                    + ", ".join(beyond),
                )
            deadline = command.at + timedelta(seconds=state.timeout + command.lease_grace_s)
            return [
                TaskAssigned(
                    task_id=command.task_id,
                    node_id=command.node_id,
                    attempt=state.attempt + 1,
                    lease_deadline=deadline,
                )
            ]
        case ReportProgress():
            _check_lease(state, command.task_id, command.node_id, command.at)
            return [
                TaskProgressed(
                    task_id=command.task_id,
                    node_id=command.node_id,
                    percent=command.percent,
                    message=command.message,
                )
            ]
        case CompleteTask():
            _check_lease(state, command.task_id, command.node_id, command.at)
            return [
                TaskCompleted(
                    task_id=command.task_id, node_id=command.node_id, result=command.result
                )
            ]
        case FailTask():
            _check_lease(state, command.task_id, command.node_id, command.at)
            return [
                TaskFailed(task_id=command.task_id, node_id=command.node_id, error=command.error)
            ]
        case ExpireLease():
            if state.status not in ACTIVE or state.attempt != command.attempt:
                raise StateConflict(
                    "lease_not_active", f"Task {command.task_id} has no lease {command.attempt}"
                )
            assert state.lease_deadline is not None and state.node_id is not None
            if command.at < state.lease_deadline:
                raise StateConflict(
                    "lease_not_expired", f"The lease on task {command.task_id} is still valid"
                )
            return [
                TaskTimedOut(
                    task_id=command.task_id,
                    node_id=state.node_id,
                    attempt=state.attempt,
                    requeued=state.attempt < state.max_attempts,
                )
            ]
        case RequeueTask():
            if state.status not in ACTIVE or state.node_id != command.node_id:
                raise StateConflict(
                    "task_not_held", f"Task {command.task_id} is not held by node {command.node_id}"
                )
            if state.attempt >= state.max_attempts:
                error = f"{command.reason}; no attempts left ({state.attempt}/{state.max_attempts})"
                return [TaskFailed(task_id=command.task_id, node_id=command.node_id, error=error)]
            return [
                TaskRequeued(
                    task_id=command.task_id, node_id=command.node_id, reason=command.reason
                )
            ]
        case CancelTask():
            if state.status in FINISHED:
                raise StateConflict(
                    "task_finished", f"Task {command.task_id} is already {state.status}"
                )
            return [TaskCancelled(task_id=command.task_id, reason=command.reason)]
    raise Invalid("unknown_command", f"Tasks do not handle {type(command).__name__}")


def beyond_offer(state: TaskState, offer: NodeOffer) -> list[str]:
    """What the task asks for beyond the offer, one phrase per cap (empty: it fits)."""
    asked = state.resources
    beyond: list[str] = []
    if asked.cpu > offer.cpu:
        beyond.append(f"cpu {asked.cpu} > {offer.cpu}")
    if asked.memory > offer.memory:
        beyond.append(f"memory {asked.memory} MiB > {offer.memory} MiB")
    if state.timeout > offer.timeout:
        beyond.append(f"timeout {state.timeout} s > {offer.timeout} s")
    if state.network and not offer.network:
        beyond.append("network, which the node does not grant")
    return beyond


def _check_lease(state: TaskState, task_id: str, node_id: str, at: datetime) -> None:
    """Only the node holding a live lease may speak for a task."""
    if state.status not in ACTIVE or state.node_id != node_id:
        raise StateConflict("task_not_held", f"Task {task_id} is not held by node {node_id}")
    assert state.lease_deadline is not None
    if at > state.lease_deadline:
        raise Gone("lease_expired", f"The lease of node {node_id} on task {task_id} has expired")


def evolve(state: TaskState, event: Event) -> TaskState:
    match event:
        case TaskSubmitted():
            return TaskState(
                exists=True,
                owner=event.owner,
                status=TaskStatus.PENDING,
                timeout=event.timeout,
                resources=event.resources,
                network=event.network,
                max_attempts=event.max_attempts,
                callback_url=event.callback_url,
            )
        case TaskAssigned():
            return replace(
                state,
                status=TaskStatus.ASSIGNED,
                attempt=event.attempt,
                node_id=event.node_id,
                lease_deadline=event.lease_deadline,
            )
        case TaskProgressed():
            return replace(state, status=TaskStatus.RUNNING)
        case TaskCompleted():
            return _released(state, TaskStatus.COMPLETED)
        case TaskFailed():
            return _released(state, TaskStatus.FAILED)
        case TaskTimedOut():
            return _released(state, TaskStatus.PENDING if event.requeued else TaskStatus.TIMED_OUT)
        case TaskRequeued():
            return _released(state, TaskStatus.PENDING)
        case TaskCancelled():
            return _released(state, TaskStatus.CANCELLED)
    return state


def _released(state: TaskState, status: TaskStatus) -> TaskState:
    return replace(state, status=status, node_id=None, lease_deadline=None)


TASK = Aggregate[TaskState](
    name="task",
    initial=TaskState,
    decide=decide,
    evolve=evolve,
    events=(
        TaskSubmitted,
        TaskAssigned,
        TaskProgressed,
        TaskCompleted,
        TaskFailed,
        TaskTimedOut,
        TaskRequeued,
        TaskCancelled,
    ),
    creates=(SubmitTask,),
    owner_of=lambda state: state.owner,
)
