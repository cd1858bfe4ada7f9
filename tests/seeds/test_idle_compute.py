"""The idle-compute seed's clients against jetflow, written from the seed's API document alone:
its paths at the root, its bodies, integer task ids, epoch times and ``{"detail": …}`` errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import websockets

from adapters.envelope import Metadata
from api.settings import Settings
from cli.serve import anonymous_warning
from handlers.commands import CommandContext
from handlers.projector import rebuild
from handlers.tasks import SubmitTaskRequest, submit_task
from projections.tasks import TASKS
from tests.conftest import Service

Factory = Callable[..., Awaitable[Service]]


@pytest.fixture
async def seed_client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """A seed client at the service's root with an admin key (it submits and leases)."""
    async with httpx.AsyncClient(
        base_url=service.base_url, headers={"X-API-Key": service.admin_key}, timeout=30
    ) as client:
        yield client


async def seed_story(client: httpx.AsyncClient) -> None:
    """The seed's whole loop, each read right after its write, as its clients do."""
    submitted = await client.post("/submit", json={"code": "print(1 + 1)", "timeout": 60})
    assert submitted.status_code == 200, submitted.text
    body = submitted.json()
    task_id = body["task_id"]
    assert isinstance(task_id, int)
    assert body["status"] == "submitted"
    assert body["message"] == f"Task {task_id} has been queued"
    assert set(body) == {"task_id", "status", "server_id", "message"}

    pending = (await client.get(f"/status/{task_id}")).json()
    assert pending["task_id"] == task_id
    assert pending["status"] == "pending"
    assert pending["result"] is None and pending["completed_at"] is None
    assert isinstance(pending["created_at"], float)

    leased = await client.get("/get_task")
    assert leased.status_code == 200, leased.text
    assert leased.json() == {
        "task_id": task_id,
        "code": "print(1 + 1)",
        "status": "assigned",
        "created_at": pending["created_at"],
        "message": f"Task {task_id} assigned for execution",
    }
    assert (await client.get(f"/status/{task_id}")).json()["status"] == "running"

    reported = await client.post("/submit_result", json={"task_id": task_id, "result": "2"})
    assert reported.status_code == 200, reported.text
    assert reported.json() == {
        "status": "ok",
        "task_id": task_id,
        "message": f"Result for task {task_id} recorded",
    }

    done = (await client.get(f"/status/{task_id}")).json()
    assert done["status"] == "completed"
    assert done["result"] == "2"
    assert done["completed_at"] >= done["created_at"]

    results = (await client.get("/results")).json()
    assert [r["task_id"] for r in results["results"]] == [task_id]
    assert results["count"] == 1
    assert results["results"][0]["result"] == "2"

    empty = await client.get("/get_task")
    assert empty.status_code == 200
    assert empty.json() == {
        "task_id": None,
        "code": None,
        "status": "no_tasks",
        "message": "No pending tasks available",
    }


async def test_the_seed_loop_with_an_api_key(seed_client: httpx.AsyncClient) -> None:
    await seed_story(seed_client)

    stats = (await seed_client.get("/stats")).json()
    assert stats["time_period"] == "all_time"
    assert stats["tasks"]["total"] == 1
    assert stats["tasks"]["completed"] == 1
    assert stats["tasks"]["pending"] == 0
    assert set(stats["nodes"]) == {"total", "idle", "busy", "offline"}
    assert stats["throughput"]["tasks_per_hour"] == 1

    root = await seed_client.get("/", headers={"Accept": "application/json"})
    assert root.status_code == 200
    assert root.json()["service"] == "Idle Computing Scheduler"
    assert root.json()["task_count"] == 1
    assert root.json()["pending_tasks"] == 0
    assert root.json()["api"] == "/api/v1"
    assert "jetflow keys create" in root.json()["authentication"]

    health = (await seed_client.get("/health")).json()
    assert health["status"] == "healthy"
    assert health["components"] == {"task_queue": "healthy", "memory_storage": "healthy"}
    assert health["server_id"] == root.json()["server_id"]


async def test_the_seed_errors_in_its_own_words(seed_client: httpx.AsyncClient) -> None:
    empty = await seed_client.post("/submit", json={"code": ""})
    assert (empty.status_code, empty.json()) == (400, {"detail": "Code cannot be empty"})
    blank = await seed_client.post("/submit", json={"code": "   "})
    assert (blank.status_code, blank.json()) == (400, {"detail": "Code cannot be empty"})
    long = await seed_client.post("/submit", json={"code": "x" * 10_001})
    assert (long.status_code, long.json()) == (
        400,
        {"detail": "Code too long (max 10000 characters)"},
    )
    missing = await seed_client.get("/status/999")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Task 999 not found"})
    not_an_id = await seed_client.get("/status/1.5")
    assert (not_an_id.status_code, not_an_id.json()) == (
        422,
        {"detail": "task_id must be an integer"},
    )
    unknown = await seed_client.post("/submit_result", json={"task_id": 999, "result": "x"})
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "Task 999 not found"})
    huge = await seed_client.post("/submit_result", json={"task_id": 10**40, "result": "x"})
    assert huge.status_code == 422
    assert huge.json()["detail"].startswith("task_id: ")
    no_code = await seed_client.post("/submit", json={"timeout": 5})
    assert (no_code.status_code, no_code.json()) == (422, {"detail": "code: Field required"})
    bad_json = await seed_client.post(
        "/submit", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert isinstance(bad_json.json()["detail"], str)
    # Nothing was recorded by any of them.
    assert (await seed_client.get("/stats")).json()["tasks"]["total"] == 0


async def test_a_result_only_from_the_node_holding_the_lease(
    service: Service, seed_client: httpx.AsyncClient
) -> None:
    task_id = (await seed_client.post("/submit", json={"code": "print(3)"})).json()["task_id"]
    assert (await seed_client.get("/get_task")).json()["task_id"] == task_id
    async with httpx.AsyncClient(
        base_url=service.base_url, headers={"X-API-Key": await service.key("worker", "other")}
    ) as other:
        refused = await other.post("/submit_result", json={"task_id": task_id, "result": "no"})
    assert refused.status_code == 409, refused.text
    assert refused.json() == {"detail": f"Task {task_id} is not held by node other"}
    assert (await seed_client.get(f"/status/{task_id}")).json()["status"] == "running"


async def test_heartbeat_names_its_node_in_the_body(
    service: Service, seed_client: httpx.AsyncClient
) -> None:
    beat = await seed_client.post(
        "/internal/heartbeat",
        json={
            "node_id": "node-001",
            "status": "idle",
            "resources": {"cpu_cores": 8, "memory_mb": 16384},
            "current_load": {"cpu_percent": 15.5, "memory_percent": 45.2},
        },
    )
    assert beat.status_code == 200, beat.text
    assert beat.json()["node_id"] == "node-001"
    nodes = (await service.http.get("/nodes")).json()["items"]
    assert [(n["node_id"], n["resources"]["cpu_cores"]) for n in nodes] == [("node-001", 8)]
    bad = await seed_client.post("/internal/heartbeat", json={"node_id": "no spaces"})
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("node_id: ")


async def test_internal_routes_lease_and_report_like_the_public_ones(
    seed_client: httpx.AsyncClient,
) -> None:
    task_id = (await seed_client.post("/submit", json={"code": "print(4)"})).json()["task_id"]
    assert (await seed_client.get("/internal/task")).json()["task_id"] == task_id
    done = await seed_client.post("/internal/result", json={"task_id": task_id, "result": "4"})
    assert done.status_code == 200
    assert (await seed_client.get(f"/status/{task_id}")).json()["status"] == "completed"


async def test_api_v1_keeps_working_beside_the_seed(
    service: Service, seed_client: httpx.AsyncClient
) -> None:
    task_id = (await seed_client.post("/submit", json={"code": "print(5)"})).json()["task_id"]
    listed = (await service.http.get("/tasks")).json()["items"]
    assert len(listed) == 1
    assert listed[0]["code"] == "print(5)"
    assert isinstance(task_id, int) and listed[0]["task_id"] != str(task_id)
    # jetflow's own id names the same task on the seed's status route.
    by_own_id = (await seed_client.get(f"/status/{listed[0]['task_id']}")).json()
    assert by_own_id["task_id"] == task_id


async def test_anonymous_callers_are_refused_by_default(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.base_url) as anonymous:
        refused = await anonymous.post("/submit", json={"code": "print(1)"})
        assert refused.status_code == 401
        assert isinstance(refused.json()["detail"], str)
        assert (await anonymous.get("/get_task")).status_code == 401
        assert (await anonymous.get("/api/v1/tasks")).status_code == 401
        ws_url = f"{service.base_url.replace('http', 'ws', 1)}/ws/updates"
        with pytest.raises(websockets.InvalidStatus) as refused_ws:
            async with websockets.connect(ws_url):
                pass
        # A handshake refused before it is accepted is answered 403 by the server (as on
        # /api/v1/events/ws), whatever the guard's reason.
        assert refused_ws.value.response.status_code == 403
        # The public service document counts no one's tasks for a caller without credentials.
        assert (await anonymous.get("/")).json()["task_count"] == 0


async def test_the_anonymous_role_runs_the_seed_without_credentials(
    service_factory: Factory,
) -> None:
    service = await service_factory(anonymous_role="admin")
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as anonymous:
        await seed_story(anonymous)
        # One rule for every route: /api/v1 lets the anonymous caller in too.
        assert (await anonymous.get("/api/v1/tasks")).status_code == 200
    task = (await service.http.get("/tasks")).json()["items"][0]
    assert task["owner"] == "anonymous"


async def test_the_seed_moves_under_a_prefix_or_goes(service_factory: Factory) -> None:
    moved = await service_factory(seed_idle_compute="/idle")
    headers = {"X-API-Key": moved.admin_key}
    async with httpx.AsyncClient(base_url=moved.base_url, headers=headers) as client:
        submitted = await client.post("/idle/submit", json={"code": "print(1)"})
        assert submitted.status_code == 200, submitted.text
        assert (await client.get("/submit")).status_code == 404
        assert (await client.get("/")).json()["service"] == "jetflow"
        assert (await client.get("/idle")).json()["service"] == "Idle Computing Scheduler"
    off = await service_factory(seed_idle_compute="off")
    async with httpx.AsyncClient(base_url=off.base_url, headers=headers) as client:
        assert (await client.post("/submit", json={"code": "print(1)"})).status_code == 404
        assert (await client.get("/")).json()["service"] == "jetflow"


def test_settings_refuse_a_bad_mount_or_role() -> None:
    with pytest.raises(ValueError, match="JETFLOW_SEED_IDLE_COMPUTE"):
        Settings(seed_idle_compute="idle")
    with pytest.raises(ValueError, match="JETFLOW_ANONYMOUS_ROLE"):
        Settings(anonymous_role="root")


def test_serve_warns_of_anonymous_access_off_loopback() -> None:
    assert anonymous_warning(None, "0.0.0.0") is None
    assert anonymous_warning("admin", "127.0.0.1") is None
    assert anonymous_warning("admin", "::1") is None
    assert anonymous_warning("admin", "localhost") is None
    assert "JETFLOW_ANONYMOUS_ROLE=admin" in (anonymous_warning("admin", "0.0.0.0") or "")
    assert anonymous_warning("viewer", "example.org") is not None


async def test_ws_updates_speaks_the_six_events_with_integer_ids(
    service: Service, seed_client: httpx.AsyncClient
) -> None:
    url = f"{service.base_url.replace('http', 'ws', 1)}/ws/updates"
    headers = {"X-API-Key": service.admin_key}
    async with websockets.connect(url, additional_headers=headers) as ws:
        beat = await seed_client.post("/internal/heartbeat", json={"node_id": "node-001"})
        assert beat.status_code == 200
        task_id = (await seed_client.post("/submit", json={"code": "print(1)"})).json()["task_id"]
        assert (await seed_client.get("/get_task")).json()["task_id"] == task_id
        await seed_client.post("/submit_result", json={"task_id": task_id, "result": "1"})
        seen = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(4)]
    assert [m["event"] for m in seen] == [
        "node_joined",
        "task_created",
        "task_started",
        "task_completed",
    ]
    assert all(set(m) == {"event", "data"} for m in seen)
    assert seen[0]["data"]["node_id"] == "node-001"
    assert [m["data"]["task_id"] for m in seen[1:]] == [task_id] * 3
    assert [m["data"]["status"] for m in seen[1:]] == ["pending", "running", "completed"]
    assert seen[2]["data"]["node_id"] == "admin"


async def test_integer_ids_survive_a_rebuild_of_the_read_model(service_factory: Factory) -> None:
    # Without projectors, so that nothing but the rebuilds writes the read model.
    service = await service_factory(projectors=False)
    runtime = service.runtime
    context = CommandContext(Metadata(actor="user:admin"), None, None)
    outcomes = [
        await submit_task(runtime.commands, SubmitTaskRequest(code=f"print({n})"), context)
        for n in (1, 2)
    ]
    ids = [outcome.first_seq for outcome in outcomes]
    headers = {"X-API-Key": service.admin_key}
    async with httpx.AsyncClient(base_url=service.base_url, headers=headers) as client:
        await rebuild(runtime.store, runtime.engine, runtime.sessions, TASKS)
        before = [(await client.get(f"/status/{n}")).json() for n in ids]
        await rebuild(runtime.store, runtime.engine, runtime.sessions, TASKS)
        after = [(await client.get(f"/status/{n}")).json() for n in ids]
    assert [s["task_id"] for s in before] == ids
    assert [s["status"] for s in before] == ["pending", "pending"]
    assert after == before
