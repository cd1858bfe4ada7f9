"""``jetflow deploy-agent``: runs deployments for real and reports them step by step.

A plan file (TOML) lists shell steps. Before them the agent prepares the environment of the
deployment's mode: ``uv`` creates a venv with uv and installs ``config.package`` into it,
``fallback`` does the same with ``python -m venv`` and pip; ``docker`` is reported unavailable
where no Docker daemon answers, and the service then fails the deployment. A cancel is honoured
at the next step boundary; logs are sent with each step's result and kept outside the events.

Steps see an environment built from nothing (``step_environment``) and run in process namespaces
of their own (``adapters.sandbox.OwnProcesses``), so the agent's environment, its API key
included, reaches them neither directly nor through ``/proc``; the package (a PEP 508
requirement, checked by the service) is passed after ``--`` so that no installer can read it
as an option.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import socket
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.deploy_modes import available_modes, uv_binary
from adapters.sandbox import OwnProcesses, SharedProcesses
from clients.polling import ApiCalls, Backoff, PollingClient

log = logging.getLogger("jetflow.deploy_agent")
MAX_LOG_BYTES = 1_000_000
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Step:
    name: str
    run: str


def load_plan(path: Path) -> list[Step]:
    raw = tomllib.loads(path.read_text())
    return [Step(name=str(s["name"]), run=str(s["run"])) for s in raw.get("steps", [])]


def step_environment(
    home: Path, venv: Path, deployment_id: str, owner: dict[str, str]
) -> dict[str, str]:
    """What a step's process gets: the owner's variables, then the deployment's own settings
    (which win); nothing of the agent's environment."""
    return {
        **owner,
        "PATH": f"{venv / 'bin'}{os.pathsep}{SYSTEM_PATH}",
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": str(venv),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "JETFLOW_DEPLOYMENT_ID": deployment_id,
    }


def environment_steps(mode: str, venv: Path, package: str | None) -> list[Step]:
    python = venv / "bin" / "python"
    if mode == "uv":
        uv = shlex.quote(uv_binary() or "uv")
        install = f"{uv} pip install --python {python} -- {shlex.quote(package)}" if package else ""
        create = f"{uv} venv {shlex.quote(str(venv))}"
    else:
        create = f"{shlex.quote(sys.executable)} -m venv {shlex.quote(str(venv))}"
        install = f"{python} -m pip install -- {shlex.quote(package)}" if package else ""
    return [
        Step("create environment", create),
        Step("install package", install or "echo 'no package to install'"),
    ]


class DeployAgent(PollingClient):
    def __init__(
        self,
        api: str,
        plan: list[Step],
        steps: OwnProcesses | SharedProcesses,
        work_dir: Path,
        agent_id: str | None = None,
        *,
        api_key: str | None = None,
        poll_s: float = 1.0,
        max_deployments: int = 0,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(api, api_key, poll_s=poll_s, backoff=backoff)
        self.plan = plan
        self.steps = steps
        self.work_dir = work_dir
        self.agent_id = agent_id or f"agent-{socket.gethostname()}-{os.getpid()}".replace(".", "-")
        self.max_deployments = max_deployments

    async def run(self) -> None:
        async with self.client(timeout=60) as http:
            while not self.stopping:
                if self.max_deployments and self.done >= self.max_deployments:
                    return
                available = await available_modes()
                claim = await http.post(
                    f"/deploy-agents/{self.agent_id}/claim",
                    json={"available": available, "total_steps": 2 + len(self.plan)},
                )
                if claim.status_code == 204:
                    await self.idle()
                    continue
                claim.raise_for_status()
                await self.deploy(http, claim.json())
                self.done += 1

    async def deploy(self, http: ApiCalls, job: dict[str, Any]) -> None:
        deployment_id = job["deployment_id"]
        home = self.work_dir / deployment_id
        home.mkdir(parents=True, exist_ok=True)
        venv = home / "venv"
        steps = [*environment_steps(job["mode"], venv, job["config"].get("package")), *self.plan]
        env = step_environment(home, venv, deployment_id, job["environment_variables"])
        deadline = time.monotonic() + job["timeout"]
        base = f"/deployments/{deployment_id}"
        log.info("deployment %s in %s mode, %d steps", deployment_id, job["mode"], len(steps))
        for index, step in enumerate(steps):
            started = await http.post(f"{base}/steps/{index}/start", json={"name": step.name})
            if started.status_code == 409:
                code = started.json()["error"]["code"]
                if code == "deployment_cancelling":
                    await http.post(f"{base}/cancel-ack")
                log.info("deployment %s stops before step %d: %s", deployment_id, index, code)
                return
            started.raise_for_status()
            ok, duration, output = await self._run(step, env, home, deadline - time.monotonic())
            finished = await http.post(
                f"{base}/steps/{index}/finish",
                json={
                    "succeeded": ok,
                    "duration_s": round(duration, 3),
                    "log": output,
                    "error": None if ok else f"step '{step.name}' failed",
                },
            )
            if finished.status_code >= 400 or not ok:
                return

    async def _run(
        self, step: Step, env: dict[str, str], cwd: Path, budget_s: float
    ) -> tuple[bool, float, str]:
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *self.steps.wrap(["/bin/sh", "-c", step.run]),
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), max(budget_s, 0.1))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            return False, time.monotonic() - started, f"$ {step.run}\n[timed out]\n"
        text = out[-MAX_LOG_BYTES:].decode(errors="replace")
        return process.returncode == 0, time.monotonic() - started, f"$ {step.run}\n{text}"
