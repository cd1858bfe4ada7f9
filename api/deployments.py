"""HTTP routes of deployments (seed: deployment service API) and of the deploy agents."""

from __future__ import annotations

import json
import time
from typing import Any

import psutil
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from sqlalchemy import Row, func, select

from adapters.deploy_modes import available_modes
from api import consistency
from api.health import VERSION
from api.http import (
    OPERATE,
    READ,
    WORK,
    IdempotencyKey,
    Rt,
    WaitForSeq,
    accepted,
    caller,
    command_context,
    path_id,
    scoped,
    utc,
    visible,
)
from domain.base import NotFound
from domain.deployment_slots import DEPLOYMENT_SLOTS, SLOTS_ID
from handlers.deployments import (
    ClaimRequest,
    StartDeploymentRequest,
    StepFinishRequest,
    StepStartRequest,
    acknowledge_cancel,
    cancel_deployment,
    claim_next,
    finish_step,
    start_deployment,
    start_step,
)
from projections.deployments import (
    DEPLOYMENTS,
    WEBHOOKS,
    deployment_steps,
    deployments,
    webhook_deliveries,
)


def progress_view(m: Any) -> dict[str, Any]:
    total = m["total_steps"]
    done = m["completed_steps"]
    remaining = None
    if total and done and m["status"] in ("running", "cancelling"):
        remaining = round(m["steps_time_total"] / done * (total - done), 3)
    return {
        "deployment_id": m["deployment_id"],
        "current_step": m["current_step"],
        "progress_percentage": round(100 * done / total, 2) if total else 0.0,
        "completed_steps": done,
        "total_steps": total,
        "estimated_time_remaining": remaining,
        "last_update": utc(m["last_update"]),
    }


def deployment_view(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    progress = progress_view(m)
    return {
        "deployment_id": m["deployment_id"],
        "status": m["status"],
        "mode": m["mode"],
        "resolved_mode": m["resolved_mode"],
        "environment": m["environment"],
        "environment_variables": {
            name: "***" for name in json.loads(m["environment_variable_names"])
        },
        "config": json.loads(m["config"]),
        "timeout": m["timeout"],
        "callback_url": m["callback_url"],
        "agent_id": m["agent_id"],
        "start_time": utc(m["started_at"] or m["accepted_at"]),
        "accepted_at": utc(m["accepted_at"]),
        "end_time": utc(m["ended_at"]),
        "duration_seconds": m["duration_s"],
        "current_step": m["current_step"],
        "progress_percentage": progress["progress_percentage"],
        "estimated_time_remaining": progress["estimated_time_remaining"],
        "failure_reason": m["failure_reason"],
        "is_active": m["status"] in ("accepted", "running", "cancelling"),
        "logs_available": m["completed_steps"] > 0 or m["current_step"] is not None,
        "metadata": json.loads(m["metadata"]),
        "seq": m["last_seq"],
    }


async def _row(runtime: Any, deployment_id: str, request: Request[Any, Any, Any]) -> Row[Any]:
    async with runtime.sessions() as session:
        row = (
            await session.execute(
                select(deployments).where(deployments.c.deployment_id == deployment_id)
            )
        ).first()
    if row is None or not visible(request, row.owner):
        raise NotFound("deployment_not_found", f"Deployment {deployment_id} not found")
    return row


async def _wait(runtime: Any, seq: int | None, *more: Any) -> None:
    if seq:
        await consistency.wait_for_seq(runtime, (DEPLOYMENTS, *more), seq)


class DeploymentController(Controller):
    path = "/api/v1"
    tags = ["deployments"]

    @post("/deployments", opt=OPERATE, status_code=HTTP_202_ACCEPTED, summary="Start a deployment")
    async def start(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        data: JSONBody[StartDeploymentRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        outcome = await start_deployment(
            runtime.commands,
            runtime.secrets,
            data,
            command_context(request, idempotency_key),
            limit=runtime.settings.max_concurrent_deployments,
            per_user_limit=runtime.settings.max_deployments_per_user,
            owner=caller(request),
        )
        deployment_id = outcome.aggregate_id
        return accepted(
            outcome,
            deployment_id=deployment_id,
            status="accepted",
            message="Deployment accepted",
            mode=data.mode,
            progress_url=f"/api/v1/deployments/{deployment_id}/progress",
            logs_url=f"/api/v1/deployments/{deployment_id}/logs",
            metadata={**data.metadata, "api_version": VERSION},
        )

    @get(
        "/deployments/health",
        opt=READ,
        summary="Deployment service health, capacity and statistics",
    )
    async def health(self, runtime: Rt) -> dict[str, Any]:
        slots, _ = await runtime.commands.repository.load(DEPLOYMENT_SLOTS, SLOTS_ID)
        async with runtime.sessions() as session:
            counts = dict(
                (
                    await session.execute(
                        select(deployments.c.status, func.count()).group_by(deployments.c.status)
                    )
                ).all()
            )
            average = await session.scalar(
                select(func.avg(deployments.c.duration_s)).where(
                    deployments.c.status == "completed"
                )
            )
        modes = await available_modes()
        disk = psutil.disk_usage(str(runtime.settings.data_dir.resolve()))
        return {
            "api_status": "ready",
            "timestamp": time.time(),
            "version": VERSION,
            "deployment_managers": {
                mode: {"status": "available" if ok else "unavailable"} for mode, ok in modes.items()
            },
            "active_deployments": len(slots.active),
            "max_concurrent_deployments": runtime.settings.max_concurrent_deployments,
            "system_resources": {
                "cpu_percent": psutil.cpu_percent(interval=None),
                "memory_percent": psutil.virtual_memory().percent,
                "disk_percent": disk.percent,
            },
            "statistics": {
                "total_deployments": sum(counts.values()),
                "successful_deployments": counts.get("completed", 0),
                "failed_deployments": counts.get("failed", 0) + counts.get("timed_out", 0),
                "cancelled_deployments": counts.get("cancelled", 0),
                "average_deployment_time": round(float(average), 3) if average else None,
            },
        }

    @get("/deployments", opt=READ, summary="Deployment history, newest first")
    async def history(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        limit: FromQuery[int] = 50,
        wait_for_seq: WaitForSeq = None,
    ) -> list[dict[str, Any]]:
        await _wait(runtime, wait_for_seq)
        limit = max(1, min(limit, 500))
        async with runtime.sessions() as session:
            rows = (
                await session.execute(
                    scoped(select(deployments), deployments.c.owner, request)
                    .order_by(deployments.c.accepted_at.desc(), deployments.c.deployment_id)
                    .limit(limit)
                )
            ).all()
        return [deployment_view(r) for r in rows]

    @get("/deployments/{deployment_id:str}", opt=READ, summary="A deployment's status")
    async def status(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        deployment_id: FromPath[str],
        wait_for_seq: WaitForSeq = None,
    ) -> dict[str, Any]:
        await _wait(runtime, wait_for_seq)
        return deployment_view(await _row(runtime, deployment_id, request))

    @get("/deployments/{deployment_id:str}/progress", opt=READ, summary="A deployment's progress")
    async def progress(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        deployment_id: FromPath[str],
        wait_for_seq: WaitForSeq = None,
    ) -> dict[str, Any]:
        await _wait(runtime, wait_for_seq)
        return progress_view((await _row(runtime, deployment_id, request))._mapping)

    @post(
        "/deployments/{deployment_id:str}/cancel",
        opt=OPERATE,
        status_code=HTTP_202_ACCEPTED,
        summary="Cancel a deployment (a running one stops at its next step boundary)",
    )
    async def cancel(
        self, request: Request[Any, Any, Any], runtime: Rt, deployment_id: FromPath[str]
    ) -> Response[dict[str, Any]]:
        outcome = await cancel_deployment(
            runtime.commands, path_id(deployment_id), command_context(request, None)
        )
        status = "cancelled" if "DeploymentCancelled" in outcome.events else "cancelling"
        return accepted(
            outcome,
            deployment_id=deployment_id,
            status=status,
            message="Deployment cancelled"
            if status == "cancelled"
            else "Cancel recorded; the agent stops at the next step",
        )

    @get(
        "/deployments/{deployment_id:str}/logs",
        opt=READ,
        summary="The logs of every step, in order",
        media_type=MediaType.TEXT,
    )
    async def logs(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        deployment_id: FromPath[str],
        wait_for_seq: WaitForSeq = None,
    ) -> str:
        await _wait(runtime, wait_for_seq)
        await _row(runtime, deployment_id, request)
        async with runtime.sessions() as session:
            steps = (
                await session.execute(
                    select(
                        deployment_steps.c.step_index,
                        deployment_steps.c.name,
                        deployment_steps.c.status,
                        deployment_steps.c.log_hash,
                    )
                    .where(deployment_steps.c.deployment_id == deployment_id)
                    .order_by(deployment_steps.c.step_index)
                )
            ).all()
        parts = []
        for index, name, status, log_hash in steps:
            text = runtime.blobs.read(log_hash).decode(errors="replace") if log_hash else ""
            parts.append(f"=== step {index + 1}: {name} ({status}) ===\n{text}")
        return "\n".join(parts)

    @get("/deployments/{deployment_id:str}/webhooks", opt=READ, summary="Webhook delivery attempts")
    async def webhooks(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        deployment_id: FromPath[str],
        wait_for_seq: WaitForSeq = None,
    ) -> list[dict[str, Any]]:
        if wait_for_seq:
            await consistency.wait_for_seq(runtime, (WEBHOOKS,), wait_for_seq)
        await _row(runtime, deployment_id, request)
        async with runtime.sessions() as session:
            rows = (
                await session.execute(
                    select(webhook_deliveries)
                    .where(webhook_deliveries.c.webhook_id == f"deployment-{deployment_id}")
                    .order_by(webhook_deliveries.c.seq)
                )
            ).all()
        return [
            {
                "event_seq": r.event_seq,
                "event_type": r.event_type,
                "url": r.url,
                "attempt": r.attempt,
                "delivered": bool(r.delivered),
                "status_code": r.status_code,
                "error": r.error,
                "will_retry": bool(r.will_retry),
                "at": utc(r.at),
                "seq": r.seq,
            }
            for r in rows
        ]

    # ------------------------------------------------------------ the deploy agent's side

    @post(
        "/deploy-agents/{agent_id:str}/claim",
        opt=WORK,
        status_code=200,
        summary="Claim a deployment",
    )
    async def claim(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        agent_id: FromPath[str],
        data: JSONBody[ClaimRequest],
    ) -> Response[dict[str, Any] | None]:
        claimed = await claim_next(
            runtime.commands,
            runtime.sessions,
            runtime.secrets,
            path_id(agent_id),
            data,
            command_context(request, None),
        )
        if claimed is None:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        return Response(
            {
                "deployment_id": claimed.deployment_id,
                "mode": claimed.mode,
                "environment": claimed.environment,
                "environment_variables": claimed.environment_variables,
                "config": claimed.config,
                "timeout": claimed.timeout,
                "force_rebuild": claimed.force_rebuild,
                "skip_health_check": claimed.skip_health_check,
                "seq": claimed.outcome.last_seq,
            }
        )

    @post(
        "/deployments/{deployment_id:str}/steps/{index:int}/start",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="The agent starts a step (409 deployment_cancelling: stop here)",
    )
    async def step_start(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        deployment_id: FromPath[str],
        index: FromPath[int],
        data: JSONBody[StepStartRequest],
    ) -> Response[dict[str, Any]]:
        outcome = await start_step(
            runtime.commands, path_id(deployment_id), index, data, command_context(request, None)
        )
        return accepted(outcome, deployment_id=deployment_id, step=index, status="running")

    @post(
        "/deployments/{deployment_id:str}/steps/{index:int}/finish",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="The agent reports a step's result and log",
    )
    async def step_finish(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        deployment_id: FromPath[str],
        index: FromPath[int],
        data: JSONBody[StepFinishRequest],
    ) -> Response[dict[str, Any]]:
        outcome = await finish_step(
            runtime.commands,
            runtime.blobs,
            path_id(deployment_id),
            index,
            data,
            command_context(request, None),
        )
        return accepted(outcome, deployment_id=deployment_id, step=index)

    @post(
        "/deployments/{deployment_id:str}/cancel-ack",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="The agent confirms it stopped after a cancel",
    )
    async def cancel_ack(
        self, request: Request[Any, Any, Any], runtime: Rt, deployment_id: FromPath[str]
    ) -> Response[dict[str, Any]]:
        outcome = await acknowledge_cancel(
            runtime.commands, path_id(deployment_id), command_context(request, None)
        )
        return accepted(outcome, deployment_id=deployment_id, status="cancelled")


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (DeploymentController,)
