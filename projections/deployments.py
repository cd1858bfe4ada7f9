"""Read models of deployments: status and progress, their steps, and webhook delivery attempts.

The webhook backlog counts each watched instance's deliveries due and not yet settled; the
dispatcher's sweep reads it to find work again after a restart (the aggregate decides what is due).

Environment variables appear here only by name; their sealed values stay in the events.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Float, Index, Integer, String, Table, Text
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.envelope import RecordedEvent
from adapters.sql import as_utc
from domain.deployments import DEPLOYMENT
from domain.webhooks import WEBHOOK
from projections.base import Projection, metadata
from projections.rows import RowBatch

deployments = Table(
    "deployments",
    metadata,
    Column("deployment_id", String(128), primary_key=True),
    Column("owner", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("resolved_mode", String(16)),
    Column("available_modes", Text),
    Column("environment", String(64), nullable=False),
    Column("environment_variable_names", Text, nullable=False),
    Column("config", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("timeout", Integer, nullable=False),
    Column("callback_url", Text),
    Column("agent_id", String(128)),
    Column("total_steps", Integer),
    Column("completed_steps", Integer, nullable=False),
    Column("current_step", String(200)),
    Column("current_step_index", Integer),
    Column("steps_time_total", Float, nullable=False),
    Column("failure_reason", Text),
    Column("accepted_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("ended_at", DateTime(timezone=True)),
    Column("duration_s", Float),
    Column("last_update", DateTime(timezone=True), nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Index("ix_deployments_status", "status", "accepted_at"),
)

deployment_steps = Table(
    "deployment_steps",
    metadata,
    Column("step_id", String(160), primary_key=True),
    Column("deployment_id", String(128), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("duration_s", Float),
    Column("log_hash", String(32)),
    Column("log_size", BigInteger),
    Column("error", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("last_seq", BigInteger, nullable=False),
    Index("ix_deployment_steps", "deployment_id", "step_index", unique=True),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("webhook_id", String(300), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_seq", BigInteger, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("delivered", Integer, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("will_retry", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_webhook_deliveries", "webhook_id", "seq"),
)

webhook_backlog = Table(
    "webhook_backlog",
    metadata,
    Column("webhook_id", String(300), primary_key=True),
    Column("url", Text, nullable=False),
    Column("due", Integer, nullable=False),
    Index("ix_webhook_backlog_due", "due"),
)

TERMINAL = {
    "DeploymentCompleted": "completed",
    "DeploymentFailed": "failed",
    "DeploymentCancelled": "cancelled",
    "DeploymentTimedOut": "timed_out",
}


def _step_key(deployment_id: str, index: int) -> str:
    return f"{deployment_id}:{index}"


class DeploymentRows:
    def __init__(self) -> None:
        self.deployments = RowBatch(deployments)
        self.steps = RowBatch(deployment_steps)

    async def load(self, session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        await self.deployments.load(session, {e.aggregate_id for e in events})
        keys = {
            _step_key(e.aggregate_id, e.payload["index"]) for e in events if "index" in e.payload
        }
        await self.steps.load(session, keys)


def apply_deployment_event(rows: DeploymentRows, event: RecordedEvent) -> None:
    p = event.payload
    key = event.aggregate_id
    at = event.occurred_at
    touched = {"last_update": at, "last_seq": event.seq}
    match event.type:
        case "DeploymentAccepted":
            rows.deployments.insert(
                {
                    "deployment_id": key,
                    "owner": p["owner"],
                    "status": "accepted",
                    "mode": p["mode"],
                    "environment": p["environment"],
                    "environment_variable_names": json.dumps(
                        sorted(v["name"] for v in p["environment_variables"])
                    ),
                    "config": json.dumps(p["config"], sort_keys=True),
                    "metadata": json.dumps(p["metadata"], sort_keys=True),
                    "timeout": p["timeout"],
                    "callback_url": p["callback_url"],
                    "completed_steps": 0,
                    "steps_time_total": 0.0,
                    "accepted_at": datetime.fromisoformat(p["accepted_at"]),
                    **touched,
                }
            )
        case "DeploymentModeResolved":
            rows.deployments.update(
                key,
                resolved_mode=None if p["resolved"] == "none" else p["resolved"],
                available_modes=json.dumps(p["available"], sort_keys=True),
                **touched,
            )
        case "DeploymentStarted":
            rows.deployments.update(
                key,
                status="running",
                agent_id=p["agent_id"],
                total_steps=p["total_steps"],
                started_at=datetime.fromisoformat(p["started_at"]),
                **touched,
            )
        case "DeploymentStepStarted":
            rows.steps.insert(
                {
                    "step_id": _step_key(key, p["index"]),
                    "deployment_id": key,
                    "step_index": p["index"],
                    "name": p["name"],
                    "status": "running",
                    "started_at": at,
                    "last_seq": event.seq,
                }
            )
            rows.deployments.update(
                key, current_step=p["name"], current_step_index=p["index"], **touched
            )
        case "DeploymentStepCompleted" | "DeploymentStepFailed":
            failed = event.type == "DeploymentStepFailed"
            rows.steps.update(
                _step_key(key, p["index"]),
                status="failed" if failed else "completed",
                duration_s=p["duration_s"],
                log_hash=p["log_hash"],
                log_size=p["log_size"],
                error=p.get("error"),
                finished_at=at,
                last_seq=event.seq,
            )
            row = rows.deployments.get(key)
            if row is not None and not failed:
                rows.deployments.update(
                    key,
                    completed_steps=row["completed_steps"] + 1,
                    steps_time_total=row["steps_time_total"] + p["duration_s"],
                    **touched,
                )
        case "DeploymentCancelRequested":
            rows.deployments.update(key, status="cancelling", **touched)
        case kind if kind in TERMINAL:
            row = rows.deployments.get(key)
            started = row["started_at"] or row["accepted_at"] if row else None
            rows.deployments.update(
                key,
                status=TERMINAL[kind],
                failure_reason=p.get("reason"),
                ended_at=at,
                duration_s=(at - as_utc(started)).total_seconds() if started else None,
                **touched,
            )


async def apply_deployment_batch(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
    rows = DeploymentRows()
    await rows.load(session, events)
    for event in events:
        apply_deployment_event(rows, event)
    await rows.deployments.flush(session)
    await rows.steps.flush(session)


async def apply_webhook_batch(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
    attempts = RowBatch(webhook_deliveries)
    backlog = RowBatch(webhook_backlog)
    await backlog.load(session, {e.aggregate_id for e in events})
    for event in events:
        p = event.payload
        if event.type == "WebhookDue":
            row = backlog.get(event.aggregate_id)
            due = (row["due"] if row else 0) + len(p["event_seqs"])
            if row is None:
                backlog.insert({"webhook_id": event.aggregate_id, "url": p["url"], "due": due})
            else:
                backlog.update(event.aggregate_id, due=due)
            continue
        attempts.insert(
            {
                "seq": event.seq,
                "webhook_id": event.aggregate_id,
                "url": p["url"],
                "event_seq": p["event_seq"],
                "event_type": p["event_type"],
                "attempt": p["attempt"],
                "delivered": int(event.type == "WebhookDelivered"),
                "status_code": p.get("status_code"),
                "error": p.get("error"),
                "will_retry": int(p.get("will_retry", False)),
                "at": event.occurred_at,
            }
        )
        settled = not p.get("will_retry", False)
        if settled and (row := backlog.get(event.aggregate_id)) is not None:
            backlog.update(event.aggregate_id, due=max(0, row["due"] - 1))
    await attempts.flush(session)
    await backlog.flush(session)


DEPLOYMENTS = Projection(
    name="deployments",
    source=DEPLOYMENT,
    tables=(deployments, deployment_steps),
    apply=apply_deployment_batch,
)
WEBHOOKS = Projection(
    name="webhooks",
    source=WEBHOOK,
    tables=(webhook_deliveries, webhook_backlog),
    apply=apply_webhook_batch,
)
