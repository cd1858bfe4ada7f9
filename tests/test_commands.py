"""The command path: retries on conflicts, idempotent resends, and the NATS request/reply door."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from adapters.nats_auth import NatsCredentials, NatsRole, connect, inbox_prefix
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


@dataclass
class NatsSender:
    """One NATS user of the service: it sends to ``cmd.task.<verb>.<user>``.

    The session's nats-server is open, so these tests prove the service's side (the sender read
    from the subject, its recorded role and owner scope); tests/security proves the server's
    side on the authenticated embedded default.
    """

    nc: Client
    user: str

    async def request(self, verb: str, body: object, **headers: str) -> dict[str, Any]:
        return await self.raw(verb, json.dumps(body).encode(), **headers)

    async def raw(self, verb: str, data: bytes, **headers: str) -> dict[str, Any]:
        reply = await self.nc.request(
            f"cmd.task.{verb}.{self.user}", data, timeout=5, headers=headers or None
        )
        return dict(json.loads(reply.data))


@pytest.fixture
async def nats_as(
    service: Service, tmp_path: Path
) -> AsyncIterator[Callable[[str, str], Awaitable[NatsSender]]]:
    """Senders created the way `jetflow nats-users create` creates them."""
    clients: list[Client] = []

    async def make(role: str, user: str) -> NatsSender:
        seed_file = tmp_path / f"{user}.nk"
        seed_file.write_bytes(service.runtime.nats_users.create(user, NatsRole(role)))
        credentials = NatsCredentials(seed_file=seed_file, inbox_prefix=inbox_prefix(user))
        clients.append(await connect([service.runtime.nats_url], credentials, user))
        return NatsSender(clients[-1], user)

    yield make
    for client in clients:
        await client.close()


async def test_commands_over_nats_request_reply(
    service: Service, nats_as: Callable[[str, str], Awaitable[NatsSender]]
) -> None:
    producer = await nats_as("producer", "ann")
    node = await nats_as("worker", "farm")
    submitted = await producer.request("submit", {"code": "print(2)", "priority": 3})
    assert submitted["ok"] is True
    task_id = submitted["task_id"]
    read = await service.http.get(f"/tasks/{task_id}", params={"wait_for_seq": submitted["seq"]})
    assert read.json()["priority"] == 3
    assert read.json()["owner"] == "ann"

    beat = await node.request("heartbeat", {"node_id": "nats-node"})
    assert beat["events"] == ["NodeJoined", "NodeHeartbeat"]
    lease = await node.request("lease", {"node_id": "nats-node"})
    assert lease["task_id"] == task_id
    assert lease["code"] == "print(2)"
    progress = await node.request("progress", {"task_id": task_id, "node_id": "nats-node"})
    assert progress["ok"] is True
    done = await node.request("result", {"task_id": task_id, "node_id": "nats-node", "result": "2"})
    task = await service.http.get(f"/tasks/{task_id}", params={"wait_for_seq": done["seq"]})
    assert task.json()["status"] == "completed"
    assert (await node.request("lease", {"node_id": "nats-node"}))["status"] == "no_tasks"
    history = await service.runtime.store.history("task", task_id)
    assert [e.actor for e in history] == ["user:ann"] + ["user:farm"] * 3


async def test_nats_refusals_use_the_error_envelope(
    service: Service, nats_as: Callable[[str, str], Awaitable[NatsSender]]
) -> None:
    producer = await nats_as("producer", "ann")
    before = await service.runtime.store.last_seq()
    empty = await producer.request("submit", {"code": ""})
    assert empty["error"]["code"] == "validation_error"
    assert empty["error"]["fields"][0]["field"] == "code"
    unknown = await producer.request("cancel", {"task_id": "missing"})
    assert unknown["error"] == {
        "status": 404,
        "code": "task_not_found",
        "message": "Task missing not found",
        "fields": [],
    }
    malformed = await producer.raw("submit", b"{not json")
    assert malformed["error"]["code"] == "malformed_json"
    assert await service.runtime.store.last_seq() == before


async def test_nats_idempotency_header(
    service: Service, nats_as: Callable[[str, str], Awaitable[NatsSender]]
) -> None:
    producer = await nats_as("producer", "ann")
    first = await producer.request("submit", {"code": "x"}, **{"Idempotency-Key": "n-1"})
    again = await producer.request("submit", {"code": "x"}, **{"Idempotency-Key": "n-1"})
    assert first["task_id"] == again["task_id"]
    assert first["seq"] == again["seq"]


async def test_the_sender_is_the_subjects_user_never_a_header(
    service: Service, nats_as: Callable[[str, str], Awaitable[NatsSender]]
) -> None:
    """A producer owns what it submits and acts only on that; headers name nobody."""
    alice = await nats_as("producer", "alice")
    bob = await nats_as("producer", "bob")
    task = await alice.request("submit", {"code": "x"})
    forged = await bob.request(
        "submit", {"code": "y", "owner": "alice"}, **{"Jetflow-Actor": "user:alice"}
    )
    cancel = await bob.request(
        "cancel", {"task_id": task["task_id"]}, **{"Jetflow-Actor": "user:alice"}
    )
    assert cancel["error"]["status"] == 404
    history = await service.runtime.store.history("task", task["task_id"])
    assert [e.type for e in history] == ["TaskSubmitted"]
    [bobs] = await service.runtime.store.history("task", forged["task_id"])
    assert (bobs.payload["owner"], bobs.actor) == ("bob", "user:bob")


async def test_a_role_sends_only_its_own_commands(
    service: Service, nats_as: Callable[[str, str], Awaitable[NatsSender]]
) -> None:
    """Checked by the service too, so a server whose permissions are wider refuses as well."""
    producer = await nats_as("producer", "ann")
    node = await nats_as("worker", "farm")
    before = await service.runtime.store.last_seq()
    leased = await producer.request("lease", {"node_id": "n1"})
    submitted = await node.request("submit", {"code": "x"})
    assert leased["error"]["status"] == submitted["error"]["status"] == 403
    service.runtime.nats_users.revoke("ann")
    revoked = await producer.request("submit", {"code": "x"})
    assert revoked["error"]["code"] == "forbidden"
    assert await service.runtime.store.last_seq() == before
