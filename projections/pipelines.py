"""Read model of pipeline executions: one row per execution with its stages and step statuses."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import BigInteger, Column, DateTime, String, Table, Text
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.envelope import RecordedEvent
from domain.pipelines import EXECUTION
from projections.base import Projection, metadata
from projections.rows import RowBatch

executions = Table(
    "pipeline_executions",
    metadata,
    Column("execution_id", String(128), primary_key=True),
    Column("pipeline", String(200), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("triggered_by", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("stages", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("last_seq", BigInteger, nullable=False),
)


def apply_execution_event(rows: RowBatch, event: RecordedEvent) -> None:
    p = event.payload
    key = event.aggregate_id
    match event.type:
        case "ExecutionStarted":
            stages = [
                {
                    "name": s["name"],
                    "steps": [{"name": n, "status": "pending", "log": ""} for n in s["steps"]],
                }
                for s in p["stages"]
            ]
            rows.insert(
                {
                    "execution_id": key,
                    "pipeline": p["pipeline"],
                    "trigger": p["trigger"],
                    "triggered_by": p["triggered_by"],
                    "status": "running",
                    "stages": json.dumps(stages),
                    "created_at": event.occurred_at,
                    "last_seq": event.seq,
                }
            )
        case "ExecutionStepUpdated":
            row = rows.get(key)
            if row is None:
                return
            stages = json.loads(row["stages"])
            for stage in stages:
                for step in stage["steps"]:
                    if stage["name"] == p["stage"] and step["name"] == p["step"]:
                        step["status"] = p["status"]
                        step["log"] = p["log"]
            rows.update(key, stages=json.dumps(stages), last_seq=event.seq)
        case "ExecutionFinished":
            rows.update(key, status=p["status"], finished_at=event.occurred_at, last_seq=event.seq)


async def apply_execution_batch(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
    rows = RowBatch(executions)
    await rows.load(session, {e.aggregate_id for e in events})
    for event in events:
        apply_execution_event(rows, event)
    await rows.flush(session)


EXECUTIONS = Projection(
    name="executions",
    source=EXECUTION,
    tables=(executions,),
    apply=apply_execution_batch,
)
