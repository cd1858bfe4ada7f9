"""Finding 3 of "Trust no one": a deployment's owner tries to make the deploy agent leak its own
environment (API key included) into the deployment's logs.

The real service and the real `jetflow deploy-agent` process, its key in its environment.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import Service

JETFLOW = str(Path(sys.executable).parent / "jetflow")
AGENT_ONLY = "jetflow-agent-variable-the-steps-never-see"


@pytest.mark.parametrize(
    "package",
    [
        "-r/proc/self/environ",
        "--requirement=/proc/self/environ",
        "--index-url=https://evil.example/simple",
        "-e.",
        "requests; import os",
        "two words",
    ],
)
async def test_a_package_that_is_not_a_requirement_is_refused_at_create(
    service: Service, package: str
) -> None:
    owner = await service.client_as("operator", "mallory")
    answer = await owner.post("/deployments", json={"mode": "uv", "config": {"package": package}})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "validation_error"
    assert [f["field"] for f in error["fields"]] == ["config.package"]
    assert "PEP 508" in error["fields"][0]["message"]
    listed = await owner.get("/deployments")
    assert listed.json() == []  # nothing was accepted


async def test_a_requirement_is_accepted_in_its_normal_form(service: Service) -> None:
    owner = await service.client_as("operator", "ann")
    answer = await owner.post(
        "/deployments",
        json={"mode": "uv", "config": {"package": "requests >= 2 ; python_version > '3'"}},
    )
    assert answer.status_code == 202, answer.text
    seq = answer.json()["seq"]
    deployment = await owner.get(
        f"/deployments/{answer.json()['deployment_id']}", params={"wait_for_seq": seq}
    )
    assert deployment.json()["config"]["package"] == 'requests>=2; python_version > "3"'


ENV_PLAN = """
[[steps]]
name = "show the environment"
run = "env"

[[steps]]
name = "show the parent's environment"
run = "tr '\\\\0' '\\\\n' < /proc/$PPID/environ || true"
"""


async def test_steps_see_nothing_of_the_agents_environment(
    service: Service, tmp_path: Path
) -> None:
    owner = await service.client_as("operator", "mallory")
    started = await owner.post(
        "/deployments",
        json={"mode": "fallback", "config": {"environment_variables": {"MINE": "owner-value"}}},
    )
    assert started.status_code == 202, started.text
    deployment_id = started.json()["deployment_id"]
    plan = tmp_path / "plan.toml"
    plan.write_text(ENV_PLAN)
    key = await service.key("worker", "deploy-agent")
    agent = await asyncio.create_subprocess_exec(
        JETFLOW,
        "deploy-agent",
        "--api",
        service.base_url,
        "--plan",
        str(plan),
        "--work-dir",
        str(tmp_path / "work"),
        "--poll",
        "0.1",
        "--max-deployments",
        "1",
        env={**os.environ, "JETFLOW_API_KEY": key, "JETFLOW_AGENT_ONLY": AGENT_ONLY},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(agent.communicate(), 240)
    assert agent.returncode == 0, stderr.decode()[-3000:]

    seq = await service.runtime.store.last_seq()
    status = await owner.get(f"/deployments/{deployment_id}", params={"wait_for_seq": seq})
    assert status.json()["status"] == "completed", status.json()
    logs = (await owner.get(f"/deployments/{deployment_id}/logs")).text
    assert "=== step 3: show the environment (completed) ===" in logs
    assert f"JETFLOW_DEPLOYMENT_ID={deployment_id}" in logs  # the step's own settings
    assert "MINE=owner-value" in logs  # and the owner's variables
    secret = key.removeprefix("jfk_").partition("_")[2]
    for leaked in ("JETFLOW_API_KEY", secret, AGENT_ONLY, "JETFLOW_AGENT_ONLY"):
        assert leaked not in logs


async def test_the_agent_refuses_to_start_without_its_sandbox(
    service: Service, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(ENV_PLAN)
    agent = await asyncio.create_subprocess_exec(
        JETFLOW,
        "deploy-agent",
        "--api",
        service.base_url,
        "--plan",
        str(plan),
        "--sandbox-bin",
        "/nonexistent/bwrap",
        env={**os.environ, "JETFLOW_API_KEY": await service.key("worker", "deploy-agent")},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(agent.communicate(), 60)
    assert agent.returncode == 2
    said = stderr.decode()
    assert "refusing to start" in said and "/nonexistent/bwrap" in said
