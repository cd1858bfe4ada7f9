"""What the compute-task routes answer (the seed's shapes), and how a read-model row becomes one."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import Row

from api.answers import Accepted, Answer, Instant
from domain.tasks import TaskStatus


class TaskResources(Answer):
    cpu: float
    memory: int


class TaskView(Answer):
    task_id: str
    status: TaskStatus
    owner: str
    code: str
    timeout: int
    resources: TaskResources
    priority: int
    max_attempts: int
    attempt: int
    node_id: str | None
    lease_deadline: Instant | None
    progress: float
    result: str | None
    error: str | None
    submitted_at: Instant
    started_at: Instant | None
    finished_at: Instant | None
    run_time_s: float | None
    seq: int


class TaskPage(Answer):
    items: list[TaskView]
    page: int
    page_size: int
    total: int


class TaskAccepted(Accepted):
    task_id: str
    status: TaskStatus


class TaskAcceptedWithMessage(TaskAccepted):
    message: str


class TaskLease(Answer):
    """The task a worker node is given to run, with the deadline of its lease."""

    task_id: str
    code: str
    timeout: int
    resources: TaskResources
    # Whether the task asked for network; a node runs it without unless it allows network.
    network: bool
    attempt: int
    lease_deadline: Instant
    status: Literal["assigned"]
    seq: int


class NodeAccepted(Accepted):
    node_id: str
    status: Literal["online"]


class NodeCapacity(Answer):
    cpu_cores: int
    memory_mb: int


class NodeUsage(Answer):
    cpu_percent: float
    memory_percent: float


class NodeView(Answer):
    node_id: str
    status: Literal["idle", "busy", "offline"]
    tasks_held: int
    joined_at: Instant
    last_heartbeat_at: Instant | None
    resources: NodeCapacity
    current_load: NodeUsage


class NodeList(Answer):
    items: list[NodeView]


class TaskResult(Answer):
    task_id: str
    result: str | None
    completed_at: Instant | None


class ResultPage(Answer):
    count: int
    page: int
    page_size: int
    results: list[TaskResult]


class TaskCounts(Answer):
    """How many tasks are in each status (one field per ``TaskStatus``), and their mean run time."""

    total: int
    pending: int
    assigned: int
    running: int
    completed: int
    failed: int
    cancelled: int
    timed_out: int
    avg_time: float | None


class NodeCounts(Answer):
    total: int
    idle: int
    busy: int
    offline: int


class Throughput(Answer):
    tasks_per_hour: int
    compute_hours: float


class TaskStats(Answer):
    time_period: Literal["all_time"]
    tasks: TaskCounts
    nodes: NodeCounts
    throughput: Throughput


def task_view(row: Row[Any]) -> TaskView:
    m = row._mapping
    return TaskView(
        task_id=m["task_id"],
        status=m["status"],
        owner=m["owner"],
        code=m["code"],
        timeout=m["timeout"],
        resources=TaskResources(cpu=m["cpu"], memory=m["memory"]),
        priority=m["priority"],
        max_attempts=m["max_attempts"],
        attempt=m["attempt"],
        node_id=m["node_id"],
        lease_deadline=m["lease_deadline"],
        progress=m["progress"],
        result=m["result"],
        error=m["error"],
        submitted_at=m["submitted_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        run_time_s=m["run_time_s"],
        seq=m["last_seq"],
    )


def node_view(row: Row[Any], held: int) -> NodeView:
    m = row._mapping
    status = m["status"] if m["status"] == "offline" else ("busy" if held else "idle")
    return NodeView(
        node_id=m["node_id"],
        status=status,
        tasks_held=held,
        joined_at=m["joined_at"],
        last_heartbeat_at=m["last_heartbeat_at"],
        resources=NodeCapacity(cpu_cores=m["cpu_cores"], memory_mb=m["memory_mb"]),
        current_load=NodeUsage(cpu_percent=m["cpu_percent"], memory_percent=m["memory_percent"]),
    )
