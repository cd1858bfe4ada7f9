"""What a deployment's callback URL is told: the seed deployment service's progress notification.

Each event that moves a deployment is sent with the status it leaves the deployment in and the
step progress, so a receiver of the seed's notifications keeps working unchanged.
"""

from __future__ import annotations

from typing import Any

from adapters.envelope import RecordedEvent
from domain.deployments import (
    DeploymentAccepted,
    DeploymentCancelled,
    DeploymentCancelRequested,
    DeploymentCompleted,
    DeploymentFailed,
    DeploymentStarted,
    DeploymentStatus,
    DeploymentStepCompleted,
    DeploymentStepFailed,
    DeploymentStepStarted,
    DeploymentTimedOut,
)

_STATUS_AFTER: dict[str, DeploymentStatus] = {
    DeploymentAccepted.type_name(): DeploymentStatus.ACCEPTED,
    DeploymentStarted.type_name(): DeploymentStatus.RUNNING,
    DeploymentStepStarted.type_name(): DeploymentStatus.RUNNING,
    DeploymentStepCompleted.type_name(): DeploymentStatus.RUNNING,
    DeploymentStepFailed.type_name(): DeploymentStatus.FAILED,
    DeploymentCancelRequested.type_name(): DeploymentStatus.CANCELLING,
    DeploymentCompleted.type_name(): DeploymentStatus.COMPLETED,
    DeploymentFailed.type_name(): DeploymentStatus.FAILED,
    DeploymentCancelled.type_name(): DeploymentStatus.CANCELLED,
    DeploymentTimedOut.type_name(): DeploymentStatus.TIMED_OUT,
}


def deployment_payload(event: RecordedEvent) -> dict[str, Any] | None:
    status = _STATUS_AFTER.get(event.type)
    if status is None:
        return None
    p = event.payload
    progress = None
    if "index" in p:
        done = p["index"] + (1 if event.type == DeploymentStepCompleted.type_name() else 0)
        progress = round(100 * done / p["total"], 2)
    elif event.type == DeploymentCompleted.type_name():
        progress = 100.0
    return {
        "deployment_id": event.aggregate_id,
        "event": event.type,
        "status": status.value,
        "current_step": p.get("name"),
        "step_index": p.get("index"),
        "total_steps": p.get("total"),
        "progress_percentage": progress,
        "timestamp": event.occurred_at.isoformat(),
        "seq": event.seq,
    }
