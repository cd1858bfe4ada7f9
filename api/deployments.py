"""HTTP routes of deployments for their users (seed: deployment service API); the deploy agents'
side is ``api.deploy_agents``."""

from __future__ import annotations

import time
from typing import Any

import psutil
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED
from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.deploy_modes import available_modes
from api.dependencies import (
    Aggregates,
    AppSettings,
    Blobs,
    Commands,
    ReadAfter,
    Secrets,
    Sessions,
    read_after,
)
from api.deployment_answers import (
    DeploymentCancelAccepted,
    DeploymentProgress,
    DeploymentServiceHealth,
    DeploymentStarted,
    DeploymentStatistics,
    DeploymentView,
    ManagerStatus,
    SystemResources,
    WebhookAttempt,
    deployment_view,
    progress_view,
)
from api.health import VERSION
from api.http import (
    OPERATE,
    READ,
    IdempotencyKey,
    command_context,
    owner_for_new,
    path_id,
    scoped,
    visible,
)
from api.routing import API_V1
from domain.base import NotFound
from domain.deployment_slots import DEPLOYMENT_SLOTS, SLOTS_ID
from handlers.deployments import (
    StartDeploymentRequest,
    cancel_deployment,
    start_deployment,
)
from projections.deployments import (
    DEPLOYMENTS,
    WEBHOOKS,
    deployment_steps,
    deployments,
    webhook_deliveries,
)


async def _row(
    sessions: async_sessionmaker[AsyncSession], deployment_id: str, request: Request[Any, Any, Any]
) -> Row[Any]:
    async with sessions() as session:
        row = (
            await session.execute(
                select(deployments).where(deployments.c.deployment_id == deployment_id)
            )
        ).first()
    if row is None or not visible(request, row.owner):
        raise NotFound("deployment_not_found", f"Deployment {deployment_id} not found")
    return row


class DeploymentController(Controller):
    path = "/"
    tags = ["deployments"]
    dependencies = {"read_after": read_after(DEPLOYMENTS)}

    @post("/deployments", opt=OPERATE, status_code=HTTP_202_ACCEPTED, summary="Start a deployment")
    async def start(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        secrets: Secrets,
        settings: AppSettings,
        data: JSONBody[StartDeploymentRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[DeploymentStarted]:
        outcome = await start_deployment(
            commands,
            secrets,
            data,
            command_context(request, idempotency_key),
            limit=settings.max_concurrent_deployments,
            per_user_limit=settings.max_deployments_per_user,
            owner=owner_for_new(request),
        )
        deployment_id = outcome.aggregate_id
        return DeploymentStarted.of(
            outcome,
            deployment_id=deployment_id,
            status="accepted",
            message="Deployment accepted",
            mode=data.mode,
            progress_url=f"{API_V1}/deployments/{deployment_id}/progress",
            logs_url=f"{API_V1}/deployments/{deployment_id}/logs",
            metadata={**data.metadata, "api_version": VERSION},
        )

    @get(
        "/deployments/health",
        opt=READ,
        summary="Deployment service health, capacity and statistics",
    )
    async def health(
        self, aggregates: Aggregates, sessions: Sessions, settings: AppSettings
    ) -> DeploymentServiceHealth:
        slots, _ = await aggregates.load(DEPLOYMENT_SLOTS, SLOTS_ID)
        async with sessions() as session:
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
        disk = psutil.disk_usage(str(settings.data_dir.resolve()))
        return DeploymentServiceHealth(
            api_status="ready",
            timestamp=time.time(),
            version=VERSION,
            deployment_managers={
                mode: ManagerStatus(status="available" if ok else "unavailable")
                for mode, ok in modes.items()
            },
            active_deployments=len(slots.active),
            max_concurrent_deployments=settings.max_concurrent_deployments,
            system_resources=SystemResources(
                cpu_percent=psutil.cpu_percent(interval=None),
                memory_percent=psutil.virtual_memory().percent,
                disk_percent=disk.percent,
            ),
            statistics=DeploymentStatistics(
                total_deployments=sum(counts.values()),
                successful_deployments=counts.get("completed", 0),
                failed_deployments=counts.get("failed", 0) + counts.get("timed_out", 0),
                cancelled_deployments=counts.get("cancelled", 0),
                average_deployment_time=round(float(average), 3) if average else None,
            ),
        )

    @get("/deployments", opt=READ, summary="Deployment history, newest first")
    async def history(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        limit: FromQuery[int] = 50,
    ) -> list[DeploymentView]:
        limit = max(1, min(limit, 500))
        async with read_after() as session:
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
        read_after: ReadAfter,
        deployment_id: FromPath[str],
    ) -> DeploymentView:
        return deployment_view(await _row(read_after, deployment_id, request))

    @get("/deployments/{deployment_id:str}/progress", opt=READ, summary="A deployment's progress")
    async def progress(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        deployment_id: FromPath[str],
    ) -> DeploymentProgress:
        return progress_view((await _row(read_after, deployment_id, request))._mapping)

    @post(
        "/deployments/{deployment_id:str}/cancel",
        opt=OPERATE,
        status_code=HTTP_202_ACCEPTED,
        summary="Cancel a deployment (a running one stops at its next step boundary)",
    )
    async def cancel(
        self, request: Request[Any, Any, Any], commands: Commands, deployment_id: FromPath[str]
    ) -> Response[DeploymentCancelAccepted]:
        outcome = await cancel_deployment(
            commands, path_id(deployment_id), command_context(request, None)
        )
        status = "cancelled" if "DeploymentCancelled" in outcome.events else "cancelling"
        return DeploymentCancelAccepted.of(
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
        read_after: ReadAfter,
        blobs: Blobs,
        deployment_id: FromPath[str],
    ) -> str:
        await _row(read_after, deployment_id, request)
        async with read_after() as session:
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
            text = blobs.read(log_hash).decode(errors="replace") if log_hash else ""
            parts.append(f"=== step {index + 1}: {name} ({status}) ===\n{text}")
        return "\n".join(parts)

    @get(
        "/deployments/{deployment_id:str}/webhooks",
        opt=READ,
        summary="Webhook delivery attempts",
        dependencies={"read_after": read_after(WEBHOOKS)},
    )
    async def webhooks(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        deployment_id: FromPath[str],
    ) -> list[WebhookAttempt]:
        await _row(read_after, deployment_id, request)
        async with read_after() as session:
            rows = (
                await session.execute(
                    select(webhook_deliveries)
                    .where(webhook_deliveries.c.webhook_id == f"deployment-{deployment_id}")
                    .order_by(webhook_deliveries.c.seq)
                )
            ).all()
        return [WebhookAttempt.model_validate(r) for r in rows]


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (DeploymentController,)
