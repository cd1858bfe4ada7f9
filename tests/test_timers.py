"""Time-driven rules through the real service: expired leases requeue, silent nodes go offline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import Service

ServiceFactory = Callable[..., Awaitable[Service]]


async def eventually(service: Service, path: str, check: Callable[[Any], bool]) -> Any:
    for _ in range(100):
        body = (await service.http.get(path)).json()
        if check(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never satisfied the check; last answer {body}")


async def test_an_expired_lease_requeues_then_times_out_after_max_attempts(
    service_factory: ServiceFactory,
) -> None:
    service = await service_factory(lease_grace_s=0.0)
    submitted = (
        await service.http.post("/tasks", json={"code": "x", "timeout": 1, "max_attempts": 2})
    ).json()
    task_id = submitted["task_id"]
    await service.http.get("/tasks", params={"wait_for_seq": submitted["seq"]})

    first = await service.http.post("/nodes/slow-node/lease")
    assert first.json()["attempt"] == 1
    requeued = await eventually(
        service, f"/tasks/{task_id}", lambda t: t["status"] == "pending" and t["attempt"] == 1
    )
    assert requeued["error"] == "lease expired; requeued"

    second = await service.http.post("/nodes/other-node/lease")
    assert second.json()["task_id"] == task_id
    assert second.json()["attempt"] == 2
    timed_out = await eventually(service, f"/tasks/{task_id}", lambda t: t["status"] == "timed_out")
    assert timed_out["node_id"] is None
    history = await service.runtime.store.history("task", task_id)
    assert [e.type for e in history] == [
        "TaskSubmitted",
        "TaskAssigned",
        "TaskTimedOut",
        "TaskAssigned",
        "TaskTimedOut",
    ]
    assert [e.actor for e in history if e.type == "TaskTimedOut"] == ["system:timer"] * 2


async def test_a_silent_node_goes_offline_and_its_tasks_are_requeued(
    service_factory: ServiceFactory,
) -> None:
    service = await service_factory(node_silence_s=0.5)
    submitted = (await service.http.post("/tasks", json={"code": "x"})).json()
    await service.http.get("/tasks", params={"wait_for_seq": submitted["seq"]})
    await service.http.post("/nodes/flaky/heartbeat")
    lease = await service.http.post("/nodes/flaky/lease")
    assert lease.status_code == 200

    await eventually(
        service, "/nodes", lambda b: bool(b["items"]) and b["items"][0]["status"] == "offline"
    )
    task = await eventually(
        service, f"/tasks/{submitted['task_id']}", lambda t: t["status"] == "pending"
    )
    assert task["error"] == "node flaky offline"
    stats = (await service.http.get("/stats")).json()
    assert stats["nodes"]["offline"] == 1

    rejoined = await service.http.post("/nodes/flaky/heartbeat")
    assert rejoined.json()["events"] == ["NodeJoined", "NodeHeartbeat"]
