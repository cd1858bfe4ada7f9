"""What the attack tests share: real `jetflow worker` processes, stopped when the test ends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Service

JETFLOW = str(Path(sys.executable).parent / "jetflow")
StartWorker = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def start_worker(service: Service) -> AsyncIterator[StartWorker]:
    """Start ``jetflow worker`` with a worker-role key in its environment *and* on its command
    line, where an unconfined task would find it; extra arguments are its caps and sandbox."""
    started: list[asyncio.subprocess.Process] = []

    async def start(node_id: str, *extra: str, key: str | None = None) -> Any:
        key = key or await service.key("worker", node_id)
        process = await asyncio.create_subprocess_exec(
            JETFLOW,
            "worker",
            "--api",
            service.base_url,
            "--node-id",
            node_id,
            "--poll",
            "0.1",
            "--heartbeat",
            "0.5",
            "--api-key",
            key,
            *extra,
            env={**os.environ, "JETFLOW_API_KEY": key},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.communicate(), 30)
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop(process: asyncio.subprocess.Process) -> str:
    """SIGTERM the worker; its stderr (the log)."""
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    return stderr.decode(errors="replace")


async def submit(service: Service, body: dict[str, Any], user: str = "mallory") -> str:
    """A task submitted by an operator who is not the worker's owner."""
    operator = await service.client_as("operator", user)
    answer = await operator.post("/tasks", json=body)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["task_id"])


async def wait_status(service: Service, task_id: str, statuses: set[str]) -> dict[str, Any]:
    task: dict[str, Any] = {"status": "not yet projected"}
    for _ in range(600):
        answer = await service.http.get(f"/tasks/{task_id}")
        if answer.status_code == 200:
            task = answer.json()
            if task["status"] in statuses:
                return task
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} stuck in {task['status']}")
