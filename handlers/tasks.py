"""Use cases of the compute-task slice, shared by the HTTP routes and the ``cmd.task.*`` subjects.

Request models here are the wire shapes (what a client sends); they reuse the domain's field
types, so a limit such as the 10,000-character code cap is written once, in ``domain.tasks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid6 import uuid7

from domain.base import CallbackUrl, DomainError
from domain.nodes import NODE, NodeLoad, NodeResources, RecordHeartbeat
from domain.tasks import (
    TASK,
    AssignTask,
    CancelTask,
    Code,
    CompleteTask,
    FailTask,
    MaxAttempts,
    NodeId,
    NodeOffer,
    Percent,
    Priority,
    ReportProgress,
    Resources,
    ResultText,
    SubmitTask,
    TaskAssigned,
    TaskId,
    TaskStatus,
    TimeoutSeconds,
)
from handlers.commands import CommandContext, CommandService
from handlers.outcome import CommandOutcome
from handlers.wire import WireModel
from projections.tasks import tasks

LEASE_CANDIDATES = 16
# What a node learns of the task it leased, besides its id.
LEASED = (tasks.c.code, tasks.c.timeout, tasks.c.cpu, tasks.c.memory, tasks.c.network)


class SubmitTaskRequest(WireModel):
    code: Code
    timeout: TimeoutSeconds = 300
    resources: Resources = Resources()
    priority: Priority = 0
    owner: Annotated[str, StringConstraints(min_length=1, max_length=256)] = "anonymous"
    max_attempts: MaxAttempts = 3
    callback_url: CallbackUrl | None = None
    network: bool = Field(
        default=False, description="run with network access (if a node grants it)"
    )


class CancelTaskRequest(WireModel):
    reason: Annotated[str, StringConstraints(max_length=1_000)] = ""


class ProgressRequest(WireModel):
    node_id: NodeId
    percent: Percent = 0.0
    message: Annotated[str, StringConstraints(max_length=1_000)] = ""


class ResultRequest(WireModel):
    node_id: NodeId
    outcome: Literal["completed", "failed"] = "completed"
    result: ResultText = ""
    error: ResultText | None = Field(default=None, description="required when outcome=failed")


class HeartbeatRequest(WireModel):
    status: Literal["idle", "busy"] | None = None
    resources: NodeResources | None = None
    current_load: NodeLoad | None = None


@dataclass(frozen=True)
class Lease:
    task_id: str
    code: str
    timeout: int
    cpu: float
    memory: int
    network: bool
    attempt: int
    lease_deadline: datetime
    outcome: CommandOutcome


def _now() -> datetime:
    return datetime.now(UTC)


async def submit_task(
    commands: CommandService, request: SubmitTaskRequest, context: CommandContext
) -> CommandOutcome:
    task_id = str(uuid7())
    command = SubmitTask(task_id=task_id, **request.model_dump())
    return await commands.execute(TASK, task_id, command, context)


async def cancel_task(
    commands: CommandService, task_id: TaskId, request: CancelTaskRequest, context: CommandContext
) -> CommandOutcome:
    now = _now()
    command = CancelTask(task_id=task_id, reason=request.reason)
    return await commands.execute(TASK, task_id, command, context, at=now)


async def report_progress(
    commands: CommandService, task_id: TaskId, request: ProgressRequest, context: CommandContext
) -> CommandOutcome:
    now = _now()
    command = ReportProgress(task_id=task_id, at=now, **request.model_dump())
    return await commands.execute(TASK, task_id, command, context, at=now)


async def report_result(
    commands: CommandService, task_id: TaskId, request: ResultRequest, context: CommandContext
) -> CommandOutcome:
    now = _now()
    command: CompleteTask | FailTask
    if request.outcome == "completed":
        command = CompleteTask(
            task_id=task_id, node_id=request.node_id, at=now, result=request.result
        )
    else:
        command = FailTask(
            task_id=task_id,
            node_id=request.node_id,
            at=now,
            error=request.error or request.result or "failed",
        )
    return await commands.execute(TASK, task_id, command, context, at=now)


async def heartbeat(
    commands: CommandService, node_id: NodeId, request: HeartbeatRequest, context: CommandContext
) -> CommandOutcome:
    now = _now()
    command = RecordHeartbeat(
        node_id=node_id, at=now, resources=request.resources, current_load=request.current_load
    )
    return await commands.execute(NODE, node_id, command, context, at=now)


async def lease_next_task(
    commands: CommandService,
    sessions: async_sessionmaker[AsyncSession],
    node_id: NodeId,
    offer: NodeOffer,
    context: CommandContext,
    *,
    lease_grace_s: float,
) -> Lease | None:
    """Offer the node the most urgent pending task that fits its offer and that it can win.

    The queue projection only proposes candidates (those within the offer, so that larger tasks
    cannot crowd them out); the task aggregate decides, fit included, so a stale projection or a
    faster node costs one refused ``AssignTask`` and the next candidate is tried. A resent lease
    (same idempotency key) answers the task the first one won, never the candidate in hand.
    """
    fits = [
        tasks.c.status == TaskStatus.PENDING,
        tasks.c.cpu <= offer.cpu,
        tasks.c.memory <= offer.memory,
        tasks.c.timeout <= offer.timeout,
    ]
    if not offer.network:
        fits.append(tasks.c.network.is_(False))
    async with sessions() as session:
        candidates = {
            row.task_id: row
            for row in (
                await session.execute(
                    select(tasks.c.task_id, *LEASED)
                    .where(*fits)
                    .order_by(tasks.c.priority.desc(), tasks.c.submitted_at, tasks.c.task_id)
                    .limit(LEASE_CANDIDATES)
                )
            ).all()
        }
    for task_id in candidates:
        now = _now()
        command = AssignTask(
            task_id=task_id, node_id=node_id, offer=offer, at=now, lease_grace_s=lease_grace_s
        )
        try:
            outcome = await commands.execute(TASK, task_id, command, context, at=now)
        except DomainError:
            continue
        [assigned] = await commands.decided_events(TASK, outcome)
        assert isinstance(assigned, TaskAssigned)
        won = candidates.get(assigned.task_id)
        if won is None:  # a resend: the task its first delivery won is no longer pending
            async with sessions() as session:
                won = (
                    await session.execute(
                        select(tasks.c.task_id, *LEASED).where(tasks.c.task_id == assigned.task_id)
                    )
                ).one()
        return Lease(
            task_id=assigned.task_id,
            code=won.code,
            timeout=won.timeout,
            cpu=won.cpu,
            memory=won.memory,
            network=won.network,
            attempt=assigned.attempt,
            lease_deadline=assigned.lease_deadline,
            outcome=outcome,
        )
    return None


def lease_answer(lease: Lease) -> dict[str, Any]:
    """What a node learns of the task it won, built once so that HTTP and NATS cannot drift apart;
    HTTP adds ``status`` and ``seq``, a NATS reply wraps it in the command outcome."""
    return {
        "task_id": lease.task_id,
        "code": lease.code,
        "timeout": lease.timeout,
        "resources": {"cpu": lease.cpu, "memory": lease.memory},
        "network": lease.network,
        "attempt": lease.attempt,
        "lease_deadline": lease.lease_deadline.isoformat(),
    }
