"""Read models of the compute-task slice: the task table (status, lease, result) and nodes.

Every column is derived from event fields and the envelope's ``occurred_at``, never from the
clock at apply time, so a rebuild from sequence 1 writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
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
from adapters.sql import as_utc
from domain.nodes import NODE
from domain.tasks import TASK
from projections.base import Projection, metadata
from projections.rows import RowBatch

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(128), primary_key=True),
    Column("owner", String(256), nullable=False),
    Column("code", Text, nullable=False),
    Column("timeout", Integer, nullable=False),
    Column("cpu", Float, nullable=False),
    Column("memory", Integer, nullable=False),
    Column("network", Boolean, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("node_id", String(128)),
    Column("lease_deadline", DateTime(timezone=True)),
    Column("progress", Float, nullable=False),
    Column("result", Text),
    Column("error", Text),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("run_time_s", Float),
    Column("last_seq", BigInteger, nullable=False),
    # The stream sequence of the task's TaskSubmitted: a stable integer alias for the seed's
    # clients (it survives replay, which rebuilds this column from the same events).
    Column("created_seq", BigInteger, nullable=False),
    Index("ix_tasks_created_seq", "created_seq", unique=True),
    Index("ix_tasks_queue", "status", "priority", "submitted_at"),
    Index("ix_tasks_node", "node_id", "status"),
)

nodes = Table(
    "nodes",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("joined_at", DateTime(timezone=True), nullable=False),
    Column("last_heartbeat_at", DateTime(timezone=True)),
    Column("cpu_cores", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("cpu_percent", Float, nullable=False),
    Column("memory_percent", Float, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
)


def _released(status: str, event: RecordedEvent, **values: object) -> dict[str, object]:
    return {
        "status": status,
        "node_id": None,
        "lease_deadline": None,
        "last_seq": event.seq,
        **values,
    }


def apply_task_event(rows: RowBatch, event: RecordedEvent) -> None:
    p = event.payload
    at = event.occurred_at
    match event.type:
        case "TaskSubmitted":
            rows.insert(
                {
                    "task_id": p["task_id"],
                    "owner": p["owner"],
                    "code": p["code"],
                    "timeout": p["timeout"],
                    "cpu": p["resources"]["cpu"],
                    "memory": p["resources"]["memory"],
                    "network": p["network"],
                    "priority": p["priority"],
                    "max_attempts": p["max_attempts"],
                    "status": "pending",
                    "attempt": 0,
                    "progress": 0.0,
                    "submitted_at": at,
                    "last_seq": event.seq,
                    "created_seq": event.seq,
                }
            )
            return
        case "TaskAssigned":
            values: dict[str, object] = {
                "status": "assigned",
                "node_id": p["node_id"],
                "attempt": p["attempt"],
                "lease_deadline": datetime.fromisoformat(p["lease_deadline"]),
                "started_at": at,
                "progress": 0.0,
                "last_seq": event.seq,
            }
        case "TaskProgressed":
            values = {"status": "running", "progress": p["percent"], "last_seq": event.seq}
        case "TaskCompleted":
            row = rows.get(event.aggregate_id)
            started = row["started_at"] if row else None
            values = _released(
                "completed",
                event,
                result=p["result"],
                progress=100.0,
                finished_at=at,
                run_time_s=(at - as_utc(started)).total_seconds() if started else None,
            )
        case "TaskFailed":
            values = _released("failed", event, error=p["error"], finished_at=at)
        case "TaskTimedOut":
            if p["requeued"]:
                values = _released("pending", event, error="lease expired; requeued")
            else:
                values = _released("timed_out", event, error="lease expired", finished_at=at)
        case "TaskRequeued":
            values = _released("pending", event, error=p["reason"])
        case "TaskCancelled":
            values = _released("cancelled", event, error=p["reason"] or None, finished_at=at)
        case _:
            return
    rows.update(event.aggregate_id, **values)


def apply_node_event(rows: RowBatch, event: RecordedEvent) -> None:
    p = event.payload
    match event.type:
        case "NodeJoined":
            if rows.get(event.aggregate_id) is not None:
                rows.update(event.aggregate_id, status="online", last_seq=event.seq)
                return
            rows.insert(
                {
                    "node_id": p["node_id"],
                    "status": "online",
                    "joined_at": event.occurred_at,
                    "cpu_cores": 0,
                    "memory_mb": 0,
                    "cpu_percent": 0.0,
                    "memory_percent": 0.0,
                    "last_seq": event.seq,
                }
            )
        case "NodeHeartbeat":
            values: dict[str, object] = {
                "last_heartbeat_at": datetime.fromisoformat(p["at"]),
                "last_seq": event.seq,
            }
            if p["resources"] is not None:
                values["cpu_cores"] = p["resources"]["cpu_cores"]
                values["memory_mb"] = p["resources"]["memory_mb"]
            if p["current_load"] is not None:
                values["cpu_percent"] = p["current_load"]["cpu_percent"]
                values["memory_percent"] = p["current_load"]["memory_percent"]
            rows.update(event.aggregate_id, **values)
        case "NodeWentOffline":
            rows.update(event.aggregate_id, status="offline", last_seq=event.seq)


def batch_applier(
    table: Table, apply: Callable[[RowBatch, RecordedEvent], None]
) -> Callable[[AsyncSession, Sequence[RecordedEvent]], Awaitable[None]]:
    """Turn a per-event applier over one table into a batch applier for ``Projection``."""

    async def apply_all(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        rows = RowBatch(table)
        await rows.load(session, {e.aggregate_id for e in events})
        for event in events:
            apply(rows, event)
        await rows.flush(session)

    return apply_all


TASKS = Projection(
    name="tasks",
    source=TASK,
    tables=(tasks,),
    apply=batch_applier(tasks, apply_task_event),
)
NODES = Projection(
    name="nodes",
    source=NODE,
    tables=(nodes,),
    apply=batch_applier(nodes, apply_node_event),
)
