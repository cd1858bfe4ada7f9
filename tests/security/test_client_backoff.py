"""Finding 7, the clients' side: a worker that got 429 crashed on ``raise_for_status``, so anyone
who could make the API refuse it for a moment stopped the farm's work for good.

Real `jetflow worker`, `jetflow render-node` and `jetflow deploy-agent` processes are pointed at
a port where nothing listens yet (connection refused); then a small proxy opens on it that first
answers 429/502/503/504 and then forwards to the real service, once losing the answer to a
report it did forward (503 after the service recorded it). Each client must keep running, log
its retries, finish the real work, and have the lost report recorded once: its resend carries
the first attempt's ``Idempotency-Key`` and is answered like the first delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.conftest import Service, free_port
from tests.faults.harness import JETFLOW, REPO
from tests.security.conftest import StartWorker, stop, submit, wait_status

# Quick retries for a test; the 429's Retry-After (1 s) is still longer than any of them.
RETRY = ("--retry-initial", "0.05", "--retry-max", "2")
HOP_BY_HOP = {b"connection", b"content-length", b"transfer-encoding", b"keep-alive", b"host"}


@dataclass
class Seen:
    path: str
    idempotency_key: str | None
    upstream: int | None  # what the service answered; None when the proxy answered itself


@dataclass
class Front:
    """An ASGI proxy in front of the service: answers ``refusals`` to the first requests, then
    forwards; the first request whose path ends with ``lose`` is forwarded and its answer
    replaced by a 503, as a proxy that timed out after the service had recorded it would."""

    upstream: str
    refusals: deque[tuple[int, dict[str, str]]]
    lose: str
    seen: list[Seen] = field(default_factory=list)
    lost: bool = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k not in HOP_BY_HOP}
        seen = Seen(scope["path"], headers.get("idempotency-key"), None)
        self.seen.append(seen)
        if self.refusals:
            status, extra = self.refusals.popleft()
            await answer(send, status, extra, b'{"error": {"code": "not_now"}}')
            return
        async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as http:
            forwarded = await http.request(
                scope["method"],
                scope["path"],
                params=scope["query_string"].decode(),
                headers=headers,
                content=body,
            )
        seen.upstream = forwarded.status_code
        if not self.lost and scope["path"].endswith(self.lose):
            self.lost = True
            await answer(send, 503, {"Retry-After": "0"}, b'{"error": {"code": "lost"}}')
            return
        kept = {k: v for k, v in forwarded.headers.items() if k.encode() not in HOP_BY_HOP}
        await answer(send, forwarded.status_code, kept, forwarded.content)

    def reports(self, suffix: str) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith(suffix) and s.upstream is not None]


async def answer(send: Any, status: int, headers: dict[str, str], body: bytes) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def front_on(port: int, front: Front) -> AsyncIterator[Front]:
    server = uvicorn.Server(
        uvicorn.Config(front, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield front
    finally:
        server.should_exit = True
        await task


def refusals(*statuses: int) -> deque[tuple[int, dict[str, str]]]:
    """429 says when to come back; the others say nothing."""
    return deque((s, {"Retry-After": "1"} if s == 429 else {}) for s in statuses)


async def logged_until(process: asyncio.subprocess.Process, pattern: str, lines: list[str]) -> None:
    """Read the client's log (stderr) into ``lines`` until a line matches ``pattern``."""
    assert process.stderr is not None
    async with asyncio.timeout(30):
        while not lines or not re.search(pattern, lines[-1]):
            line = await process.stderr.readline()
            assert line, "the client ended:\n" + "".join(lines)[-3000:]
            lines.append(line.decode(errors="replace"))


def retries(log: str) -> list[tuple[str, float]]:
    """(reason, wait) of every retry the client logged at WARNING."""
    return [
        (m["reason"], float(m["wait"]))
        for m in re.finditer(r"WARNING .*?: (?P<reason>.+); retry \d+ in (?P<wait>[\d.]+) s", log)
    ]


def survived(log: str, *statuses: int) -> None:
    """Refused connections first, then each status, every retry logged; none a crash."""
    seen = retries(log)
    assert seen[0][0].startswith("ConnectError"), seen
    reasons = {reason for reason, _ in seen}
    assert {f"HTTP {s}" for s in statuses} <= reasons, seen
    assert all(wait >= 1.0 for reason, wait in seen if reason == "HTTP 429"), seen  # Retry-After
    assert "Traceback" not in log
    assert "jfk_" not in log  # no key in any line


async def test_a_worker_waits_out_refusals_and_outages_then_completes_its_task(
    service: Service, start_worker: StartWorker
) -> None:
    task_id = await submit(service, {"code": "print(6 * 7)"})
    port = free_port()
    # argparse keeps the last --api: the worker talks to the front, not to the service.
    worker = await start_worker("node-backoff", "--api", f"http://127.0.0.1:{port}", *RETRY)
    lines: list[str] = []
    await logged_until(worker, "ConnectError", lines)  # nothing listens yet
    front = Front(service.base_url, refusals(429, 503, 502, 504), lose="/result")
    async with front_on(port, front):
        task = await wait_status(service, task_id, {"completed", "failed"})
        assert worker.returncode is None  # still running
        log = "".join(lines) + await stop(worker)
    assert task["status"] == "completed", task
    assert worker.returncode == 0, log[-3000:]
    survived(log, 429, 503, 502, 504)

    first, resent = front.reports(f"/tasks/{task_id}/result")
    assert first.idempotency_key is not None
    assert resent.idempotency_key == first.idempotency_key
    assert [first.upstream, resent.upstream] == [202, 202]  # the resend answered like the first
    history = (await service.http.get(f"/audit/task/{task_id}")).json()["events"]
    assert [e["type"] for e in history].count("TaskCompleted") == 1


async def test_a_render_node_waits_out_an_outage_then_renders_its_frames(service: Service) -> None:
    created = await service.http.post(
        "/render-jobs",
        json={
            "unionid": "backoff",
            "oss_file_path": "projects/backoff/scene.ma",
            "render_engine": "maya",
            "total_frames": 3,
        },
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["data"]["id"]
    port = free_port()
    nodes = await asyncio.create_subprocess_exec(
        JETFLOW,
        "render-node",
        "--api",
        f"http://127.0.0.1:{port}",
        "--api-key",
        await service.key("worker", "render-backoff"),
        "--idle-exit",
        "1",
        *RETRY,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []
    try:
        await logged_until(nodes, "ConnectError", lines)
        front = Front(service.base_url, refusals(503, 503), lose="/finish")
        async with front_on(port, front):
            out, err = await asyncio.wait_for(nodes.communicate(), 60)
    finally:
        if nodes.returncode is None:
            nodes.kill()
            await nodes.wait()
    log = "".join(lines) + err.decode(errors="replace")
    assert nodes.returncode == 0, log[-3000:]
    # The lost finish was resent with its key and answered as recorded, not refused.
    assert "3 frames finished, 0 failed, 0 refused" in out.decode(), out.decode() + log[-3000:]
    survived(log, 503)
    finishes = front.reports("/finish")
    [first, resent] = [s for s in finishes if s.path == finishes[0].path]
    assert resent.idempotency_key == first.idempotency_key is not None
    assert [first.upstream, resent.upstream] == [202, 202]
    seq = await service.runtime.store.last_seq()
    job = await service.http.get(f"/render-jobs/{job_id}", params={"wait_for_seq": seq})
    assert job.json()["data"]["completed_frames"] == 3, job.text


PLAN = """
[[steps]]
name = "say so"
run = "echo deployed"
"""


async def test_a_deploy_agent_waits_out_an_outage_then_finishes_the_deployment(
    service: Service, tmp_path: Path
) -> None:
    owner = await service.client_as("operator", "ann")
    started = await owner.post("/deployments", json={"mode": "uv"})
    assert started.status_code == 202, started.text
    deployment_id = started.json()["deployment_id"]
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    port = free_port()
    agent = await asyncio.create_subprocess_exec(
        JETFLOW,
        "deploy-agent",
        "--api",
        f"http://127.0.0.1:{port}",
        "--plan",
        str(plan),
        "--work-dir",
        str(tmp_path / "work"),
        "--poll",
        "0.1",
        "--max-deployments",
        "1",
        *RETRY,
        env={**os.environ, "JETFLOW_API_KEY": await service.key("worker", "agent-backoff")},
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []
    try:
        await logged_until(agent, "ConnectError", lines)
        # Steps 0 and 1 prepare the environment; step 2, the plan's, completes the deployment.
        front = Front(service.base_url, refusals(503, 503), lose="/steps/2/finish")
        async with front_on(port, front):
            _, err = await asyncio.wait_for(agent.communicate(), 60)
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()
    log = "".join(lines) + err.decode(errors="replace")
    assert agent.returncode == 0, log[-3000:]
    survived(log, 503)
    first, resent = front.reports("/steps/2/finish")
    assert resent.idempotency_key == first.idempotency_key is not None
    assert [first.upstream, resent.upstream] == [202, 202]  # not 409: the step had moved on
    seq = await service.runtime.store.last_seq()
    status = await owner.get(f"/deployments/{deployment_id}", params={"wait_for_seq": seq})
    assert status.json()["status"] == "completed", status.json()
