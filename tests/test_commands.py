"""The command path: retries on conflicts, idempotent resends, and the NATS request/reply door."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from tests.conftest import Service


async def test_resending_a_submission_with_the_same_key_appends_once(service: Service) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await service.http.post("/tasks", json={"code": "print(1)"}, headers=headers)
    before = await service.runtime.store.last_seq()
    again = await service.http.post("/tasks", json={"code": "print(1)"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.json()["seq"] == first.json()["seq"]
    assert await service.runtime.store.last_seq() == before
    listed = await service.http.get("/tasks", params={"wait_for_seq": first.json()["seq"]})
    assert listed.json()["total"] == 1


async def test_concurrent_resends_append_once_and_answer_alike(service: Service) -> None:
    headers = {"Idempotency-Key": "burst"}
    answers = await asyncio.gather(
        *(service.http.post("/tasks", json={"code": "x"}, headers=headers) for _ in range(8))
    )
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["task_id"] for a in answers}) == 1
    history = await service.runtime.store.read_subject("ev.task.>")
    assert len(history) == 1


@pytest.mark.shared_stack
async def test_a_resent_cancel_answers_like_the_first(service: Service) -> None:
    task = (await service.http.post("/tasks", json={"code": "x"})).json()
    headers = {"Idempotency-Key": "cancel-once"}
    first = await service.http.post(f"/tasks/{task['task_id']}/cancel", headers=headers)
    again = await service.http.post(f"/tasks/{task['task_id']}/cancel", headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["seq"] == again.json()["seq"]
    without_key = await service.http.post(f"/tasks/{task['task_id']}/cancel")
    assert without_key.status_code == 409


async def test_racing_leases_give_a_task_to_exactly_one_node(service: Service) -> None:
    task = (await service.http.post("/tasks", json={"code": "x"})).json()
    await service.http.get("/tasks", params={"wait_for_seq": task["seq"]})
    leases = await asyncio.gather(*(service.http.post(f"/nodes/node-{i}/lease") for i in range(10)))
    assert sorted(a.status_code for a in leases) == [200] + [204] * 9
    history = await service.runtime.store.history("task", task["task_id"])
    assert [e.type for e in history] == ["TaskSubmitted", "TaskAssigned"]


async def test_a_burst_on_one_task_either_lands_or_answers_409(service: Service) -> None:
    task = (await service.http.post("/tasks", json={"code": "x"})).json()
    await service.http.get("/tasks", params={"wait_for_seq": task["seq"]})
    await service.http.post("/nodes/n1/lease")
    reports = await asyncio.gather(
        *(
            service.http.post(
                f"/tasks/{task['task_id']}/progress", json={"node_id": "n1", "percent": p}
            )
            for p in range(20)
        )
    )
    landed = [r for r in reports if r.status_code == 202]
    conflicts = [r for r in reports if r.status_code != 202]
    assert all(r.json()["error"]["code"] == "concurrency_conflict" for r in conflicts)
    assert len(landed) >= 10
    history = await service.runtime.store.history("task", task["task_id"])
    assert len(history) == 2 + len(landed)
    assert sorted(r.json()["seq"] for r in landed) == [e.seq for e in history[2:]]


@pytest.fixture
async def nc(service: Service) -> nats.NATS:
    client = await nats.connect(service.runtime.nats_url)
    yield client
    await client.close()


async def request(nc: nats.NATS, verb: str, body: object, **headers: str) -> dict[str, object]:
    reply = await nc.request(
        f"cmd.task.{verb}", json.dumps(body).encode(), timeout=5, headers=headers or None
    )
    return dict(json.loads(reply.data))


async def test_commands_over_nats_request_reply(service: Service, nc: nats.NATS) -> None:
    submitted = await request(nc, "submit", {"code": "print(2)", "priority": 3})
    assert submitted["ok"] is True
    task_id = submitted["task_id"]
    read = await service.http.get(f"/tasks/{task_id}", params={"wait_for_seq": submitted["seq"]})
    assert read.json()["priority"] == 3

    beat = await request(nc, "heartbeat", {"node_id": "nats-node"})
    assert beat["events"] == ["NodeJoined", "NodeHeartbeat"]
    lease = await request(nc, "lease", {"node_id": "nats-node"})
    assert lease["task_id"] == task_id
    assert lease["code"] == "print(2)"
    progress = await request(nc, "progress", {"task_id": task_id, "node_id": "nats-node"})
    assert progress["ok"] is True
    done = await request(nc, "result", {"task_id": task_id, "node_id": "nats-node", "result": "2"})
    task = await service.http.get(f"/tasks/{task_id}", params={"wait_for_seq": done["seq"]})
    assert task.json()["status"] == "completed"
    assert (await request(nc, "lease", {"node_id": "nats-node"}))["status"] == "no_tasks"


@pytest.mark.shared_stack
async def test_nats_refusals_use_the_error_envelope(service: Service, nc: nats.NATS) -> None:
    before = await service.runtime.store.last_seq()
    empty = await request(nc, "submit", {"code": ""})
    assert empty["error"]["code"] == "validation_error"
    assert empty["error"]["fields"][0]["field"] == "code"
    unknown = await request(nc, "cancel", {"task_id": "missing"})
    assert unknown["error"] == {
        "status": 404,
        "code": "task_not_found",
        "message": "Task missing not found",
        "fields": [],
    }
    malformed = await nc.request("cmd.task.submit", b"{not json", timeout=5)
    assert json.loads(malformed.data)["error"]["code"] == "malformed_json"
    assert await service.runtime.store.last_seq() == before


@pytest.mark.shared_stack
async def test_nats_idempotency_header(service: Service, nc: nats.NATS) -> None:
    first = await request(nc, "submit", {"code": "x"}, **{"Idempotency-Key": "n-1"})
    again = await request(nc, "submit", {"code": "x"}, **{"Idempotency-Key": "n-1"})
    assert first["task_id"] == again["task_id"]
    assert first["seq"] == again["seq"]
