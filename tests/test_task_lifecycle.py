"""A user's story of the compute-task slice over real HTTP, real NATS and a real database."""

from __future__ import annotations

import pytest

from tests.conftest import Service

pytestmark = pytest.mark.asyncio


async def submit(service: Service, **body: object) -> dict[str, object]:
    answer = await service.http.post("/tasks", json={"code": "print(1)", **body})
    assert answer.status_code == 202, answer.text
    assert answer.headers["X-Jetflow-Seq"] == str(answer.json()["seq"])
    return dict(answer.json())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_submit_lease_progress_complete_is_read_back(service: Service) -> None:
    submitted = await submit(service, code="print(6 * 7)", timeout=60, priority=5)
    task_id = submitted["task_id"]

    pending = await service.http.get(f"/tasks/{task_id}", params={"wait_for_seq": submitted["seq"]})
    assert pending.status_code == 200
    assert pending.json()["status"] == "pending"
    assert pending.json()["resources"] == {"cpu": 1.0, "memory": 512}

    lease = await service.http.post("/nodes/node-1/lease")
    assert lease.status_code == 200, lease.text
    assert lease.json()["task_id"] == task_id
    assert lease.json()["code"] == "print(6 * 7)"
    assert lease.json()["attempt"] == 1

    progress = await service.http.post(
        f"/tasks/{task_id}/progress", json={"node_id": "node-1", "percent": 50}
    )
    assert progress.status_code == 202
    running = await service.http.get(
        f"/tasks/{task_id}", params={"wait_for_seq": progress.json()["seq"]}
    )
    assert running.json()["status"] == "running"
    assert running.json()["node_id"] == "node-1"

    done = await service.http.post(
        f"/tasks/{task_id}/result", json={"node_id": "node-1", "result": "42\n"}
    )
    assert done.status_code == 202
    seq = done.json()["seq"]
    task = (await service.http.get(f"/tasks/{task_id}", params={"wait_for_seq": seq})).json()
    assert task["status"] == "completed"
    assert task["result"] == "42\n"
    assert task["node_id"] is None
    assert task["run_time_s"] >= 0

    results = (await service.http.get("/results", params={"wait_for_seq": seq})).json()
    assert results["count"] == 1
    assert results["results"][0]["task_id"] == task_id

    stats = (await service.http.get("/stats", params={"wait_for_seq": seq})).json()
    assert stats["tasks"]["total"] == 1
    assert stats["tasks"]["completed"] == 1
    assert stats["tasks"]["avg_time"] is not None


async def test_lease_answers_204_when_nothing_is_pending(service: Service) -> None:
    answer = await service.http.post("/nodes/node-1/lease")
    assert answer.status_code == 204


async def test_highest_priority_is_leased_first(service: Service) -> None:
    await submit(service, priority=1)
    urgent = await submit(service, priority=9)
    await service.http.get("/tasks", params={"wait_for_seq": urgent["seq"]})
    lease = await service.http.post("/nodes/node-1/lease")
    assert lease.json()["task_id"] == urgent["task_id"]


async def test_failed_result_marks_the_task_failed(service: Service) -> None:
    submitted = await submit(service)
    await service.http.get("/tasks", params={"wait_for_seq": submitted["seq"]})
    await service.http.post("/nodes/node-1/lease")
    failed = await service.http.post(
        f"/tasks/{submitted['task_id']}/result",
        json={"node_id": "node-1", "outcome": "failed", "error": "ZeroDivisionError"},
    )
    assert failed.status_code == 202
    task = await service.http.get(
        f"/tasks/{submitted['task_id']}", params={"wait_for_seq": failed.json()["seq"]}
    )
    assert task.json()["status"] == "failed"
    assert task.json()["error"] == "ZeroDivisionError"


async def test_cancel_a_pending_task_then_cancel_again_is_refused(service: Service) -> None:
    submitted = await submit(service)
    cancelled = await service.http.post(
        f"/tasks/{submitted['task_id']}/cancel", json={"reason": "no longer needed"}
    )
    assert cancelled.status_code == 202
    task = await service.http.get(
        f"/tasks/{submitted['task_id']}", params={"wait_for_seq": cancelled.json()["seq"]}
    )
    assert task.json()["status"] == "cancelled"

    again = await service.http.post(f"/tasks/{submitted['task_id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "task_finished"
    assert await service.http.post("/nodes/node-1/lease") is not None


async def test_list_tasks_is_paginated_and_filtered(service: Service) -> None:
    last = {}
    for _ in range(5):
        last = await submit(service)
    cancel = await service.http.post(f"/tasks/{last['task_id']}/cancel")
    seq = cancel.json()["seq"]
    page = (
        await service.http.get("/tasks", params={"page": 2, "page_size": 2, "wait_for_seq": seq})
    ).json()
    assert page["total"] == 5
    assert len(page["items"]) == 2
    assert page["page"] == 2
    pending = (await service.http.get("/tasks", params={"status": "pending"})).json()
    assert pending["total"] == 4
    cancelled = (await service.http.get("/tasks", params={"status": "cancelled"})).json()
    assert [t["task_id"] for t in cancelled["items"]] == [last["task_id"]]


async def test_heartbeats_make_nodes_visible_in_stats(service: Service) -> None:
    beat = await service.http.post(
        "/nodes/node-7/heartbeat",
        json={"resources": {"cpu_cores": 8, "memory_mb": 16384}, "current_load": {}},
    )
    assert beat.status_code == 202
    assert beat.json()["events"] == ["NodeJoined", "NodeHeartbeat"]
    again = await service.http.post("/nodes/node-7/heartbeat")
    assert again.json()["events"] == ["NodeHeartbeat"]
    stats = (await service.http.get("/stats", params={"wait_for_seq": again.json()["seq"]})).json()
    assert stats["nodes"] == {"total": 1, "idle": 1, "busy": 0, "offline": 0}
    nodes = (await service.http.get("/nodes")).json()["items"]
    assert nodes[0]["resources"] == {"cpu_cores": 8, "memory_mb": 16384}


async def test_health_reports_every_component(service: Service) -> None:
    answer = await service.http.get("/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "healthy"
    assert body["components"]["stream"]["name"] == service.runtime.settings.stream
    assert body["components"]["database"]["status"] == "healthy"
    assert set(body["components"]["projections"]) >= {"tasks", "nodes", "render", "scenes"}
    assert 0 <= body["components"]["system"]["memory_percent"] <= 100
