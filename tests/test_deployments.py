"""Deployments end to end: the real deploy agent in uv and fallback modes, cancel, the limit under
racing starts, secrets that never reach the event log, and signed, retried webhooks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sys
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from litestar import Litestar, Request, post

from tests.conftest import Service, free_port

JETFLOW = str(Path(sys.executable).parent / "jetflow")
SECRET = "s3cret-token-never-logged"
ServiceFactory = Callable[..., Awaitable[Service]]


def build_wheel(dest: Path) -> Path:
    """A tiny pure-Python wheel, so installing 'for real' needs no package index."""
    name, version = "jetflow_hello", "0.1.0"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "def greet():\n    return 'hello from jetflow_hello'\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: jetflow-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    wheel = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def requirement(wheel: Path) -> str:
    """The wheel as a PEP 508 direct reference, the form a deployment's package must take."""
    return f"jetflow_hello @ {wheel.as_uri()}"


PLAN = """
[[steps]]
name = "check the package"
run = "python -c 'import jetflow_hello; print(jetflow_hello.greet())'"

[[steps]]
name = "use the secret"
run = "test -n \\"$DISCORD_TOKEN\\" && echo token has ${#DISCORD_TOKEN} characters"
"""

SLOW_PLAN = """
[[steps]]
name = "one"
run = "sleep 0.5"

[[steps]]
name = "two"
run = "sleep 1.5"

[[steps]]
name = "three"
run = "echo never"
"""


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(PLAN)
    return path


async def run_agent(service: Service, plan: Path, work: Path, count: int = 1) -> str:
    agent = await asyncio.create_subprocess_exec(
        JETFLOW,
        "deploy-agent",
        "--api",
        service.base_url,
        "--plan",
        str(plan),
        "--work-dir",
        str(work),
        "--poll",
        "0.1",
        "--max-deployments",
        str(count),
        "--api-key",
        await service.key("worker", "deploy-agent"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(agent.communicate(), 240)
    assert agent.returncode == 0, stderr.decode()[-3000:]
    return stderr.decode()


async def start(service: Service, **body: Any) -> dict[str, Any]:
    answer = await service.http.post("/deployments", json=body)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


async def final_status(service: Service, deployment_id: str) -> dict[str, Any]:
    seq = await service.runtime.store.last_seq()
    answer = await service.http.get(f"/deployments/{deployment_id}", params={"wait_for_seq": seq})
    return dict(answer.json())


async def stream_text(service: Service) -> str:
    events = await service.runtime.store.read_subject("ev.>")
    return "\n".join(json.dumps(e.as_dict()) for e in events)


@pytest.mark.parametrize("mode", ["uv", "fallback"])
async def test_a_deployment_runs_for_real_and_keeps_secrets_out_of_the_log(
    service: Service, plan: Path, tmp_path: Path, mode: str
) -> None:
    wheel = build_wheel(tmp_path)
    started = await start(
        service,
        mode=mode,
        environment="staging",
        config={"package": requirement(wheel), "environment_variables": {"DISCORD_TOKEN": SECRET}},
        metadata={"initiated_by": "user_12345"},
    )
    deployment_id = started["deployment_id"]
    assert deployment_id.startswith(f"{mode}_")
    await run_agent(service, plan, tmp_path / "work")

    status = await final_status(service, deployment_id)
    assert status["status"] == "completed", status
    assert status["resolved_mode"] == mode
    assert status["progress_percentage"] == 100.0
    assert status["environment_variables"] == {"DISCORD_TOKEN": "***"}
    progress = (await service.http.get(f"/deployments/{deployment_id}/progress")).json()
    assert progress["completed_steps"] == progress["total_steps"] == 4

    logs = (await service.http.get(f"/deployments/{deployment_id}/logs")).text
    assert "hello from jetflow_hello" in logs
    assert f"token has {len(SECRET)} characters" in logs
    installed = list((tmp_path / "work" / deployment_id / "venv").rglob("jetflow_hello*.dist-info"))
    assert installed, "the package was not installed into the deployment's venv"

    assert SECRET not in await stream_text(service)
    assert SECRET not in json.dumps(status)
    assert SECRET not in logs
    history = (await service.http.get("/deployments", params={"limit": 5})).json()
    assert history[0]["deployment_id"] == deployment_id
    assert SECRET not in json.dumps(history)


async def test_auto_resolves_to_an_available_mode_and_docker_is_refused(
    service: Service, plan: Path, tmp_path: Path
) -> None:
    docker = await start(service, mode="docker")
    config = {
        "package": requirement(build_wheel(tmp_path)),
        "environment_variables": {"DISCORD_TOKEN": "t"},
    }
    auto = await start(service, mode="auto", config=config)
    # The docker deployment is claimed first; where no daemon answers the service fails it at
    # once and hands the agent the next one.
    await run_agent(service, plan, tmp_path / "work", count=1)

    resolved = await final_status(service, auto["deployment_id"])
    assert resolved["status"] == "completed", (
        resolved,
        (await service.http.get(f"/deployments/{auto['deployment_id']}/logs")).text,
    )
    assert resolved["resolved_mode"] in ("docker", "uv")
    refused = await final_status(service, docker["deployment_id"])
    health = (await service.http.get("/deployments/health")).json()
    assert health["deployment_managers"]["docker"]["status"] == "unavailable"
    assert refused["status"] == "failed"
    assert "docker mode is not available" in refused["failure_reason"]
    assert health["deployment_managers"]["uv"]["status"] == "available"
    assert health["statistics"]["total_deployments"] == 2


async def test_cancel_mid_way_stops_at_the_next_step_boundary(
    service: Service, tmp_path: Path
) -> None:
    plan = tmp_path / "slow.toml"
    plan.write_text(SLOW_PLAN)
    started = await start(service, mode="fallback")
    deployment_id = started["deployment_id"]
    agent = asyncio.create_task(run_agent(service, plan, tmp_path / "work"))
    # Preparing the environment (a venv) can take long on a loaded machine: wait for step two
    # by time, not by a count of polls.
    deadline = asyncio.get_running_loop().time() + 120
    while asyncio.get_running_loop().time() < deadline:
        progress = (await service.http.get(f"/deployments/{deployment_id}/progress")).json()
        if progress.get("current_step") == "two":
            break
        await asyncio.sleep(0.05)
    cancel = await service.http.post(f"/deployments/{deployment_id}/cancel")
    assert cancel.status_code == 202
    assert cancel.json()["status"] == "cancelling"
    await agent

    status = await final_status(service, deployment_id)
    assert status["status"] == "cancelled"
    logs = (await service.http.get(f"/deployments/{deployment_id}/logs")).text
    assert "step 4: two" in logs
    assert "never" not in logs
    again = await service.http.post(f"/deployments/{deployment_id}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "deployment_finished"


async def test_twenty_racing_starts_take_exactly_the_three_slots(service: Service) -> None:
    answers = await asyncio.gather(
        *(service.http.post("/deployments", json={"mode": "uv"}) for _ in range(20))
    )
    taken = [a for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code != 202]
    assert len(taken) == 3
    assert {a.status_code for a in refused} == {409}
    error = refused[0].json()["error"]
    assert error["code"] == "deployment_limit_reached"
    assert "At most 3 deployments" in error["message"]
    health = (await service.http.get("/deployments/health")).json()
    assert health["active_deployments"] == 3
    assert health["max_concurrent_deployments"] == 3

    freed = taken[0].json()["deployment_id"]
    assert (await service.http.post(f"/deployments/{freed}/cancel")).json()["status"] == "cancelled"
    for _ in range(100):
        retry = await service.http.post("/deployments", json={"mode": "uv"})
        if retry.status_code == 202:
            break
        await asyncio.sleep(0.05)
    assert retry.status_code == 202


@pytest.mark.shared_stack
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mode": "kubernetes"}, "mode"),
        ({"mode": "uv", "timeout": 0}, "timeout"),
        ({"mode": "uv", "timeout": -3}, "timeout"),
        ({"mode": "uv", "callback_url": "not a url"}, "callback_url"),
        ({"mode": "uv", "callback_url": "ftp://example.com/x"}, "callback_url"),
        ({"mode": "uv", "config": {"environment_variables": {"1BAD": "x"}}}, "config"),
    ],
)
async def test_bad_deployment_requests_are_refused(
    service: Service, body: dict[str, Any], field: str
) -> None:
    before = await service.runtime.store.last_seq()
    answer = await service.http.post("/deployments", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "validation_error"
    assert any(f["field"].startswith(field) for f in error["fields"]), error
    assert await service.runtime.store.last_seq() == before
    missing = await service.http.get("/deployments/uv_20250101_000000_deadbeef")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "deployment_not_found"


class Receiver:
    """A real HTTP endpoint that fails its first attempts, then records what it is sent."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[int, dict[str, Any], dict[str, str], bytes]] = []

    def app(self) -> Litestar:
        @post("/hook", status_code=200)
        async def hook(request: Request[Any, Any, Any]) -> dict[str, str]:
            body = await request.body()
            self.calls.append((len(self.calls) + 1, json.loads(body), dict(request.headers), body))
            if self.failures > 0:
                self.failures -= 1
                raise_status = 500
                from litestar.exceptions import HTTPException

                raise HTTPException(status_code=raise_status, detail="not yet")
            return {"ok": "yes"}

        return Litestar([hook])


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    target = Receiver(failures=2)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(target.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield target, f"http://127.0.0.1:{port}/hook"
    server.should_exit = True
    await task


async def test_webhooks_are_signed_retried_and_delivered_in_order(
    service_factory: ServiceFactory,
    receiver: tuple[Receiver, str],
    plan: Path,
    tmp_path: Path,
) -> None:
    service = await service_factory(webhook_backoff_s=0.05)
    target, url = receiver
    config = {
        "package": requirement(build_wheel(tmp_path)),
        "environment_variables": {"DISCORD_TOKEN": "t"},
    }
    started = await start(service, mode="uv", callback_url=url, config=config)
    deployment_id = started["deployment_id"]
    await run_agent(service, plan, tmp_path / "work")
    for _ in range(200):
        delivered = [c for c in target.calls if c[1]["event"] == "DeploymentCompleted"]
        if delivered:
            break
        await asyncio.sleep(0.05)
    assert delivered, [c[1]["event"] for c in target.calls]

    secret = service.runtime.webhook_secret
    for _, payload, headers, body in target.calls:
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        assert headers["x-jetflow-signature"] == expected
        assert payload["deployment_id"] == deployment_id
    first_three = [c[1]["event"] for c in target.calls[:3]]
    assert first_three == ["DeploymentAccepted"] * 3  # failed twice, then delivered
    settled: list[int] = []
    for _, payload, _, _ in target.calls[2:]:
        if not settled or payload["seq"] != settled[-1]:
            settled.append(payload["seq"])
    assert settled == sorted(settled), "deliveries out of order"
    steps = [c[1] for c in target.calls if c[1]["event"] == "DeploymentStepCompleted"]
    assert [s["progress_percentage"] for s in steps] == [25.0, 50.0, 75.0, 100.0]
    assert steps[0]["current_step"] == "create environment"

    attempts = (await service.http.get(f"/deployments/{deployment_id}/webhooks")).json()
    assert [(a["attempt"], a["delivered"]) for a in attempts[:3]] == [
        (1, False),
        (2, False),
        (3, True),
    ]
    assert attempts[0]["status_code"] == 500
    assert attempts[0]["will_retry"] is True


async def test_any_aggregate_created_with_a_callback_url_gets_webhooks(
    service_factory: ServiceFactory, receiver: tuple[Receiver, str]
) -> None:
    service = await service_factory(webhook_backoff_s=0.05)
    target, url = receiver
    task = (
        await service.http.post("/tasks", json={"code": "print(1)", "callback_url": url})
    ).json()
    job = (
        await service.http.post(
            "/render-jobs",
            json={
                "unionid": "u",
                "oss_file_path": "a.ma",
                "render_engine": "maya",
                "total_frames": 2,
                "callback_url": url,
            },
        )
    ).json()["data"]
    await service.http.post(f"/tasks/{task['task_id']}/cancel")
    for _ in range(200):
        seen = {(c[1].get("aggregate"), c[1]["event"]) for c in target.calls}
        if {("task", "TaskCancelled"), ("render", "FramesQueued")} <= seen:
            break
        await asyncio.sleep(0.05)
    assert ("task", "TaskSubmitted") in seen
    assert ("task", "TaskCancelled") in seen
    assert ("render", "RenderJobCreated") in seen
    submitted = next(c[1] for c in target.calls if c[1]["event"] == "TaskSubmitted")
    assert submitted["task_id"] == task["task_id"]
    assert "code" not in submitted["data"]
    created = next(c[1] for c in target.calls if c[1]["event"] == "RenderJobCreated")
    assert created["job_id"] == job["id"]


async def test_a_deployment_past_its_timeout_is_timed_out_and_frees_its_slot(
    service: Service,
) -> None:
    started = await start(service, mode="uv", timeout=1)
    deployment_id = started["deployment_id"]
    for _ in range(100):
        status = (await service.http.get(f"/deployments/{deployment_id}")).json()
        if status.get("status") == "timed_out":
            break
        await asyncio.sleep(0.05)
    assert status["status"] == "timed_out"
    for _ in range(100):
        health = (await service.http.get("/deployments/health")).json()
        if health["active_deployments"] == 0:
            break
        await asyncio.sleep(0.05)
    assert health["active_deployments"] == 0
    assert health["statistics"]["failed_deployments"] == 1
