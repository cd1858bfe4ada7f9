"""GET /metrics: a small load over HTTP and NATS moves every family the issue lists, the Grafana
dashboard names only metrics a scrape shows, and only admins and operators may scrape."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_sse import aconnect_sse
from litestar import Litestar, Request, post
from litestar.exceptions import HTTPException
from prometheus_client.parser import text_string_to_metric_families

from adapters.nats_auth import NatsCredentials, NatsRole, connect, inbox_prefix
from api.metrics import endpoint_label
from handlers.commands import CommandContext, CommandService
from handlers.tasks import HeartbeatRequest, heartbeat
from tests.conftest import Service, free_port

pytestmark = pytest.mark.asyncio

DASHBOARD = Path(__file__).parent.parent / "docs" / "grafana" / "jetflow.json"
TUS = {"Tus-Resumable": "1.0.0"}
# sample name -> [(labels, value)]; a family without samples (a gauge with none to show) as []
Scrape = dict[str, list[tuple[dict[str, str], float]]]


async def scrape(service: Service) -> Scrape:
    answer = await service.http.get(f"{service.base_url}/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Scrape = {}
    for family in text_string_to_metric_families(answer.text):
        samples.setdefault(family.name, [])
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: Scrape, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that carry ``labels``."""
    return sum(
        v
        for have, v in samples.get(name, [])
        if all(have.get(key) == wanted for key, wanted in labels.items())
    )


async def until(
    service: Service, holds: Callable[[Scrape], bool], timeout_s: float = 5.0
) -> Scrape:
    async with asyncio.timeout(timeout_s):
        while not holds(samples := await scrape(service)):
            await asyncio.sleep(0.05)
    return samples


class HeldReceiver:
    """A webhook endpoint that holds its first call until released, then fails it (500) once:
    meanwhile the instance's later events wait in the backlog."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    def app(self) -> Litestar:
        @post("/hook", status_code=200)
        async def hook(request: Request[Any, Any, Any]) -> dict[str, str]:
            await request.body()
            self.calls += 1
            if self.calls == 1:
                await self.release.wait()
                raise HTTPException(status_code=500, detail="not yet")
            return {"ok": "yes"}

        return Litestar([hook])


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[HeldReceiver, str]]:
    target = HeldReceiver()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(target.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield target, f"http://127.0.0.1:{port}/hook"
    target.release.set()
    server.should_exit = True
    await task


async def nats_submit(service: Service, tmp_path: Path) -> None:
    """One task submitted over ``cmd.task.submit.<user>`` by a producer NATS user."""
    seed = tmp_path / "producer.nk"
    seed.write_bytes(service.runtime.nats_users.create("metrics-producer", NatsRole.producer))
    credentials = NatsCredentials(seed_file=seed, inbox_prefix=inbox_prefix("metrics-producer"))
    nc = await connect([service.runtime.nats_url], credentials, "metrics-producer")
    try:
        reply = await nc.request(
            "cmd.task.submit.metrics-producer", json.dumps({"code": "1"}).encode(), timeout=5
        )
    finally:
        await nc.close()
    assert json.loads(reply.data)["ok"] is True


async def upload_in_flight(service: Service, operator: httpx.AsyncClient) -> Scrape:
    """An upload whose body pauses after its first kilobyte: scraped while it waits."""
    created = await operator.post("/uploads/", headers={**TUS, "Upload-Length": "1536"})
    assert created.status_code == 201, created.text
    upload = created.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    more = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 1024
        await more.wait()
        yield b"b" * 512

    headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    sent = operator.patch(f"/uploads/{upload}", content=body(), headers=headers)
    patch = asyncio.create_task(sent)
    try:
        during = await until(service, lambda s: value(s, "jetflow_upload_bytes_in_flight") >= 1024)
    finally:
        more.set()
        done = await patch
    assert done.status_code == 204, done.text
    return during


async def test_a_small_load_moves_every_family(
    service_factory: Callable[..., Awaitable[Service]],
    receiver: tuple[HeldReceiver, str],
    tmp_path: Path,
) -> None:
    service = await service_factory(node_silence_s=0.5, webhook_backoff_s=0.05)
    hook, url = receiver
    before = await scrape(service)
    operator = await service.client_as("operator", "ann")
    worker = await service.client_as("worker", "farm")

    # A task run to completion by a worker; its webhook receiver holds the first delivery.
    task = (await operator.post("/tasks", json={"code": "print(1)", "callback_url": url})).json()
    await operator.get(f"/tasks/{task['task_id']}", params={"wait_for_seq": task["seq"]})
    lease = await worker.post("/nodes/w1/lease", json={})
    assert lease.json()["task_id"] == task["task_id"]
    result = {"node_id": "w1", "result": "1"}
    assert (await worker.post(f"/tasks/{task['task_id']}/result", json=result)).status_code == 202
    job = {"unionid": "u", "oss_file_path": "p/a.ma", "render_engine": "maya", "total_frames": 2}
    assert (await operator.post("/render-jobs", json=job)).status_code == 201
    assert (await operator.post("/deployments", json={"mode": "fallback"})).status_code == 202
    refused = await operator.post("/tasks/no-such-task/cancel", json={})
    assert refused.status_code == 404
    code = refused.json()["error"]["code"]
    async with httpx.AsyncClient(base_url=service.base_url) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
    # A node's state moved on by another service process: the next heartbeat here retries.
    assert (await worker.post("/nodes/idle/heartbeat", json={})).status_code == 202
    elsewhere = CommandService(service.runtime.store, service.runtime.commands.idempotency)
    await heartbeat(elsewhere, "idle", HeartbeatRequest(), CommandContext())
    assert (await worker.post("/nodes/idle/heartbeat", json={})).status_code == 202
    await nats_submit(service, tmp_path)
    during_upload = await upload_in_flight(service, operator)
    async with aconnect_sse(service.http, "GET", "/events/stream", params={"from_seq": 1}):
        live = await until(service, lambda s: value(s, "jetflow_live_feeds") >= 1)
    endpoint = endpoint_label(url)
    waiting = await until(
        service, lambda s: value(s, "jetflow_webhook_backlog", endpoint=endpoint) >= 2
    )
    hook.release.set()
    after = await until(
        service,
        lambda s: (
            value(s, "jetflow_webhook_deliveries_total", outcome="delivered") >= 3
            and value(s, "jetflow_timers_fired_total", slice="tasks") >= 1
            and value(s, "jetflow_tasks", status="completed") == 1
            and value(s, "jetflow_webhook_backlog") == 0
        ),
    )

    def moved(name: str, **labels: str) -> bool:
        return value(after, name, **labels) > value(before, name, **labels)

    assert moved("jetflow_http_requests_total", path="/api/v1/tasks", status_code="202")
    assert moved("jetflow_http_requests_total", path="/metrics", status_code="401")
    assert moved("jetflow_http_request_duration_seconds_count", path="/api/v1/tasks")
    paths = {labels["path"] for labels, _ in after["jetflow_http_requests_total"]}
    assert "/api/v1/tasks/{task_id}/result" in paths  # route templates, not ids
    assert not any(task["task_id"] in path for path in paths)
    assert moved("jetflow_cmd_received_messages_total")
    assert moved("jetflow_cmd_received_processed_messages_duration_seconds_count")
    assert moved("jetflow_commands_total", command="SubmitTask", outcome="accepted")
    assert moved("jetflow_commands_total", aggregate="task", outcome="refused", code=code)
    assert moved("jetflow_command_conflict_retries_total", aggregate="node")
    assert moved("jetflow_events_appended_total", aggregate="task")
    assert moved("jetflow_projection_applied_seq", projection="tasks")
    assert moved("jetflow_projection_batch_seconds_count", projection="tasks")
    assert value(after, "jetflow_projection_parked_events", projection="tasks") == 0
    assert moved("jetflow_timer_checks_total", slice="tasks")
    assert moved("jetflow_timers_fired_total", slice="tasks")
    assert moved("jetflow_webhook_deliveries_total", outcome="delivered")
    assert moved("jetflow_webhook_deliveries_total", outcome="retrying")
    assert value(before, "jetflow_webhook_backlog") == 0
    assert value(after, "jetflow_webhook_backlog") == 0
    assert value(waiting, "jetflow_webhook_backlog", endpoint=endpoint) >= 2
    assert value(before, "jetflow_live_feeds") == 0 and value(live, "jetflow_live_feeds") >= 1
    assert moved("jetflow_upload_received_bytes_total")
    assert value(after, "jetflow_upload_received_bytes_total") >= 1536
    assert value(during_upload, "jetflow_upload_bytes_in_flight") >= 1024
    assert value(after, "jetflow_upload_bytes_in_flight") == 0
    assert value(before, "jetflow_tasks", status="completed") == 0
    assert value(after, "jetflow_tasks", status="pending") == 1  # the one sent over NATS
    assert value(after, "jetflow_tasks", status="timed_out") == 0  # every status is shown
    assert moved("jetflow_render_jobs", status="queued")
    assert moved("jetflow_deployments", status="accepted")
    assert value(after, "jetflow_nats_up") == 1 and value(after, "jetflow_database_up") == 1
    assert moved("jetflow_stream_last_seq")

    # With its projector stopped, the tasks read model falls behind and says by how much.
    await service.runtime.stop_background()
    assert value(after, "jetflow_projection_lag_events", projection="tasks") == 0
    assert (await operator.post("/tasks", json={"code": "2"})).status_code == 202
    behind = await scrape(service)
    assert value(behind, "jetflow_projection_lag_events", projection="tasks") == 1
    assert value(behind, "jetflow_projection_lag_seconds", projection="tasks") > 0

    # The dashboard's queries name only metrics this scrape shows.
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    named = {name for expr in exprs for name in re.findall(r"\bjetflow_[a-z0-9_]+", expr)}
    assert len(named) >= 25
    assert sorted(named - set(behind)) == []


@pytest.mark.shared_stack
async def test_only_admins_and_operators_may_scrape(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.base_url) as anonymous:
        refused = await anonymous.get("/metrics")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    for role in ("viewer", "worker"):
        client = await service.client_as(role, f"metrics-{role}")
        answer = await client.get(f"{service.base_url}/metrics")
        assert answer.status_code == 403, role
        assert answer.json()["error"]["code"] == "forbidden"
    operator = await service.client_as("operator", "metrics-operator")
    scraped = await operator.get(f"{service.base_url}/metrics")
    assert scraped.status_code == 200
    assert "jetflow_commands_total" in scraped.text
