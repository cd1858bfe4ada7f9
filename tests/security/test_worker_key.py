"""Finding 2 of "Trust no one", the key's side: what a stolen worker-role key can still reach.

A worker key leases, reports and claims; it reads nothing it was not handed. These tests use one
against the served API (real HTTP, real nats-server) the way the finding's thief would.
"""

from __future__ import annotations

from tests.conftest import Service
from tests.security.conftest import submit, wait_status

SECRET = "ann-s3cret-never-for-workers"


async def test_a_worker_key_reads_no_one_elses_deployment_task_or_file(service: Service) -> None:
    ann = await service.client_as("operator", "ann")
    started = await ann.post(
        "/deployments",
        json={"mode": "fallback", "config": {"environment_variables": {"TOKEN": SECRET}}},
    )
    assert started.status_code == 202, started.text
    deployment_id = started.json()["deployment_id"]
    task_id = await submit(service, {"code": "print('ann only')"}, user="ann")
    seq = started.json()["seq"]
    thief = await service.client_as("worker", "stolen")

    for path in (
        f"/deployments/{deployment_id}",
        f"/deployments/{deployment_id}/progress",
        f"/deployments/{deployment_id}/logs",
        "/deployments",
        f"/tasks/{task_id}",
        "/tasks",
        "/results",
        "/files",
        "/audit/events",
        "/events/stream",
    ):
        answer = await thief.get(path, params={"wait_for_seq": seq})
        assert answer.status_code == 403, (path, answer.status_code)
        assert answer.json()["error"]["code"] == "forbidden"
        assert SECRET not in answer.text

    # Secrets are opened once, for the agent that claims the deployment, and never again.
    agent = await service.client_as("worker", "agent-a")
    claim = {"available": {"docker": False, "uv": False, "fallback": True}, "total_steps": 2}
    claimed = await agent.post("/deploy-agents/agent-a/claim", json=claim)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["environment_variables"] == {"TOKEN": SECRET}
    again = await thief.post("/deploy-agents/agent-b/claim", json=claim)
    assert again.status_code == 204
    assert (await thief.get(f"/deployments/{deployment_id}")).status_code == 403


async def test_a_replayed_lease_key_hands_no_other_task(service: Service) -> None:
    first = await submit(service, {"code": "print('first')"}, user="ann")
    node_a = await service.client_as("worker", "node-a")
    key = {"Idempotency-Key": "lease-1"}
    leased = await node_a.post("/nodes/node-a/lease", headers=key)
    assert leased.status_code == 200 and leased.json()["task_id"] == first

    second = await submit(service, {"code": "print('second, for whoever leases it')"}, user="bob")
    # Another node's key, sent again by a thief: the answer is a lease of its own or nothing,
    # never the pending task's code while it stays pending.
    node_b = await service.client_as("worker", "node-b")
    replayed = await node_b.post("/nodes/node-b/lease", headers=key)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["task_id"] == second
    seq = replayed.json()["seq"]
    held = (await service.http.get(f"/tasks/{second}", params={"wait_for_seq": seq})).json()
    assert held["status"] == "assigned" and held["node_id"] == "node-b"
    assert replayed.json()["code"] == held["code"]

    # The node that sent the key first gets its own answer again, the task it won, and not the
    # task pending when it resends.
    third = await submit(service, {"code": "print('third')"}, user="bob")
    await wait_status(service, third, {"pending"})  # in the queue the lease reads
    resent = await node_a.post("/nodes/node-a/lease", headers=key)
    assert resent.status_code == 200
    assert resent.json()["task_id"] == first
    assert resent.json()["code"] == "print('first')"
    seq = resent.json()["seq"]
    pending = (await service.http.get(f"/tasks/{third}", params={"wait_for_seq": seq})).json()
    assert pending["status"] == "pending" and pending["node_id"] is None
