"""Task events as stories give them ("given a submitted task…"), shared by the store and
fast-tier tests so that each story names only what matters to it."""

from __future__ import annotations

from datetime import datetime

from domain.tasks import Resources, TaskAssigned, TaskProgressed, TaskSubmitted


def submitted(
    task_id: str = "t1",
    *,
    code: str = "print(1)",
    owner: str = "ann",
    timeout: int = 60,
    max_attempts: int = 1,
    callback_url: str | None = None,
) -> TaskSubmitted:
    return TaskSubmitted(
        task_id=task_id,
        code=code,
        timeout=timeout,
        resources=Resources(),
        priority=0,
        owner=owner,
        max_attempts=max_attempts,
        callback_url=callback_url,
    )


def assigned(
    task_id: str, deadline: datetime, *, node: str = "n1", attempt: int = 1
) -> TaskAssigned:
    return TaskAssigned(task_id=task_id, node_id=node, attempt=attempt, lease_deadline=deadline)


def progressed(task_id: str, percent: float) -> TaskProgressed:
    return TaskProgressed(task_id=task_id, node_id="n1", percent=percent, message="")
