"""What the deployment routes answer (the seed's shapes), and how a read-model row becomes one."""

from __future__ import annotations

import json
from typing import Any, Literal

from sqlalchemy import Row

from api.answers import Accepted, Answer, Instant
from domain.deployments import DeploymentStatus, Mode


class DeploymentProgress(Answer):
    deployment_id: str
    current_step: str | None
    progress_percentage: float
    completed_steps: int
    total_steps: int | None
    estimated_time_remaining: float | None
    last_update: Instant


class DeploymentView(Answer):
    """A deployment; its environment variables by name only, each value shown as ``***``."""

    deployment_id: str
    status: DeploymentStatus
    mode: Mode
    resolved_mode: str | None
    environment: str
    environment_variables: dict[str, Literal["***"]]
    config: dict[str, Any]
    timeout: int
    callback_url: str | None
    agent_id: str | None
    start_time: Instant
    accepted_at: Instant
    end_time: Instant | None
    duration_seconds: float | None
    current_step: str | None
    progress_percentage: float
    estimated_time_remaining: float | None
    failure_reason: str | None
    is_active: bool
    logs_available: bool
    metadata: dict[str, str]
    seq: int


class DeploymentStarted(Accepted):
    deployment_id: str
    status: Literal["accepted"]
    message: str
    mode: Mode
    progress_url: str
    logs_url: str
    metadata: dict[str, str]


class DeploymentAccepted(Accepted):
    deployment_id: str
    status: DeploymentStatus


class DeploymentCancelAccepted(DeploymentAccepted):
    message: str


class StepReported(Accepted):
    deployment_id: str
    step: int


class StepStarted(StepReported):
    status: Literal["running"]


class Claimed(Answer):
    """The deployment an agent is given, with its environment variables opened for it alone."""

    deployment_id: str
    mode: str
    environment: str
    environment_variables: dict[str, str]
    config: dict[str, Any]
    timeout: int
    force_rebuild: bool
    skip_health_check: bool
    seq: int


class WebhookAttempt(Answer):
    """One delivery attempt of a webhook, read from its row's attributes."""

    event_seq: int
    event_type: str
    url: str
    attempt: int
    delivered: bool
    status_code: int | None
    error: str | None
    will_retry: bool
    at: Instant
    seq: int


class ManagerStatus(Answer):
    status: Literal["available", "unavailable"]


class SystemResources(Answer):
    cpu_percent: float
    memory_percent: float
    disk_percent: float


class DeploymentStatistics(Answer):
    total_deployments: int
    successful_deployments: int
    failed_deployments: int
    cancelled_deployments: int
    average_deployment_time: float | None


class DeploymentServiceHealth(Answer):
    api_status: Literal["ready"]
    timestamp: float
    version: str
    deployment_managers: dict[str, ManagerStatus]
    active_deployments: int
    max_concurrent_deployments: int
    system_resources: SystemResources
    statistics: DeploymentStatistics


def progress_view(m: Any) -> DeploymentProgress:
    total = m["total_steps"]
    done = m["completed_steps"]
    remaining = None
    if total and done and m["status"] in ("running", "cancelling"):
        remaining = round(m["steps_time_total"] / done * (total - done), 3)
    return DeploymentProgress(
        deployment_id=m["deployment_id"],
        current_step=m["current_step"],
        progress_percentage=round(100 * done / total, 2) if total else 0.0,
        completed_steps=done,
        total_steps=total,
        estimated_time_remaining=remaining,
        last_update=m["last_update"],
    )


def deployment_view(row: Row[Any]) -> DeploymentView:
    m = row._mapping
    progress = progress_view(m)
    return DeploymentView(
        deployment_id=m["deployment_id"],
        status=m["status"],
        mode=m["mode"],
        resolved_mode=m["resolved_mode"],
        environment=m["environment"],
        environment_variables={name: "***" for name in json.loads(m["environment_variable_names"])},
        config=json.loads(m["config"]),
        timeout=m["timeout"],
        callback_url=m["callback_url"],
        agent_id=m["agent_id"],
        start_time=m["started_at"] or m["accepted_at"],
        accepted_at=m["accepted_at"],
        end_time=m["ended_at"],
        duration_seconds=m["duration_s"],
        current_step=m["current_step"],
        progress_percentage=progress.progress_percentage,
        estimated_time_remaining=progress.estimated_time_remaining,
        failure_reason=m["failure_reason"],
        is_active=m["status"] in ("accepted", "running", "cancelling"),
        logs_available=m["completed_steps"] > 0 or m["current_step"] is not None,
        metadata=json.loads(m["metadata"]),
        seq=m["last_seq"],
    )
