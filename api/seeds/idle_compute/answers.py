"""The idle-compute seed's bodies, field for field, and its ``{"detail": …}`` refusals.

Times are epoch seconds (floats) and task ids integers, as the seed's clients parse them; the
integer is the stream sequence of the task's ``TaskSubmitted`` (``tasks.created_seq``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from litestar import MediaType, Request, Response
from litestar.types import ExceptionHandlersMap
from pydantic import BaseModel, ConfigDict

from adapters.sql import as_utc
from api.errors import refusal
from domain.tasks import TaskStatus

# jetflow's statuses as the seed names them: it knows pending, running, completed and failed.
SEED_STATUS: dict[str, str] = {
    TaskStatus.PENDING.value: "pending",
    TaskStatus.ASSIGNED.value: "running",
    TaskStatus.RUNNING.value: "running",
    TaskStatus.COMPLETED.value: "completed",
    TaskStatus.FAILED.value: "failed",
    TaskStatus.CANCELLED.value: "failed",
    TaskStatus.TIMED_OUT.value: "failed",
}


class SeedAnswer(BaseModel):
    """A seed body: its fields only, ``None`` answered as ``null`` (its clients read them)."""

    model_config = ConfigDict(extra="forbid")


class SeedService(SeedAnswer):
    service: Literal["Idle Computing Scheduler"]
    status: Literal["running"]
    version: str
    server_id: str
    task_count: int
    pending_tasks: int
    # jetflow's own pointers (``api.root``) beside the seed's fields, which they do not clash
    # with: whoever opens the root still learns where the API, its description and keys are.
    api: str
    openapi: str
    docs: str
    health: str
    authentication: str


class Submitted(SeedAnswer):
    task_id: int
    status: Literal["submitted"]
    server_id: str
    message: str


class Leased(SeedAnswer):
    task_id: int
    code: str
    status: Literal["assigned"]
    created_at: float
    message: str


class NoTask(SeedAnswer):
    task_id: None
    code: None
    status: Literal["no_tasks"]
    message: str


class Recorded(SeedAnswer):
    status: Literal["ok"]
    task_id: int
    message: str


class HeartbeatRecorded(SeedAnswer):
    status: Literal["ok"]
    node_id: str
    message: str


class TaskStatusView(SeedAnswer):
    task_id: int
    status: str
    result: str | None
    created_at: float
    completed_at: float | None


class ResultItem(SeedAnswer):
    task_id: int
    result: str | None
    completed_at: float | None


class Results(SeedAnswer):
    count: int
    results: list[ResultItem]
    server_id: str


class HealthComponents(SeedAnswer):
    task_queue: Literal["healthy", "unhealthy"]
    memory_storage: Literal["healthy", "unhealthy"]


class SeedHealth(SeedAnswer):
    status: Literal["healthy", "unhealthy"]
    timestamp: float
    server_id: str
    components: HealthComponents


class TaskCounts(SeedAnswer):
    """The seed's counts; ``running`` is jetflow's addition (leased and running tasks)."""

    total: int
    completed: int
    pending: int
    running: int
    failed: int
    avg_time: float | None


class NodeCounts(SeedAnswer):
    total: int
    idle: int
    busy: int
    offline: int


class Throughput(SeedAnswer):
    tasks_per_hour: int
    compute_hours: float


class SeedStats(SeedAnswer):
    time_period: Literal["all_time"]
    tasks: TaskCounts
    nodes: NodeCounts
    throughput: Throughput


def epoch(value: datetime | None) -> float | None:
    return None if value is None else as_utc(value).timestamp()


def detail(status: int, message: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        {"detail": message}, status_code=status, media_type=MediaType.JSON, headers=headers
    )


def _detail_refusal(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """jetflow's description of the failure (``api.errors.refusal``) in the seed's envelope;
    a refused field says which field and why in the one ``detail`` string."""
    body, headers = refusal(request, exc)
    message = body.message
    if body.fields:
        message = "; ".join(f"{f.field}: {f.message}" for f in body.fields)
    return detail(body.status, message, headers)


# Every failure, an unexpected one too (500 "Internal error"), answers in the seed's envelope.
DETAIL_HANDLERS: ExceptionHandlersMap = {Exception: _detail_refusal}
