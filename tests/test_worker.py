"""`jetflow worker`, the real CLI in its own process, runs submitted tasks to the end."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from tests.conftest import Service

JETFLOW = str(Path(sys.executable).parent / "jetflow")


async def wait_status(service: Service, task_id: str, statuses: set[str]) -> dict[str, Any]:
    for _ in range(300):
        answer = await service.http.get(f"/tasks/{task_id}")
        task = answer.json() if answer.status_code == 200 else {"status": "not yet projected"}
        if task["status"] in statuses:
            return dict(task)
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} stuck in {task['status']}")


async def test_the_worker_runs_tasks_and_reports_every_outcome(service: Service) -> None:
    cases = {
        "ok": {"code": "print(sum(range(10)))", "timeout": 30},
        "raises": {"code": "raise ValueError('bad input')", "timeout": 30},
        "too_slow": {"code": "import time; time.sleep(30)", "timeout": 1, "max_attempts": 1},
        "too_big": {
            "code": "x = bytearray(1024**3)",
            "timeout": 30,
            "resources": {"cpu": 1, "memory": 128},
        },
    }
    ids = {}
    for name, body in cases.items():
        ids[name] = (await service.http.post("/tasks", json=body)).json()["task_id"]

    worker = await asyncio.create_subprocess_exec(
        JETFLOW,
        "worker",
        "--api",
        service.base_url,
        "--node-id",
        "worker-1",
        "--poll",
        "0.1",
        "--heartbeat",
        "0.5",
        "--api-key",
        await service.key("worker", "worker-1"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ok = await wait_status(service, ids["ok"], {"completed", "failed"})
        raised = await wait_status(service, ids["raises"], {"completed", "failed"})
        slow = await wait_status(service, ids["too_slow"], {"completed", "failed"})
        big = await wait_status(service, ids["too_big"], {"completed", "failed"})
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(worker.communicate(), 15)
    assert worker.returncode == 0, stderr.decode()[-2000:]

    assert ok["status"] == "completed"
    assert ok["result"] == "45\n"
    assert raised["status"] == "failed"
    assert "ValueError: bad input" in raised["error"]
    assert slow["status"] == "failed"
    assert "timed out" in slow["error"]
    assert big["status"] == "failed"

    nodes = (await service.http.get("/nodes")).json()["items"]
    assert [n["node_id"] for n in nodes] == ["worker-1"]
    assert nodes[0]["resources"]["cpu_cores"] >= 1
    stats = (await service.http.get("/stats")).json()
    assert stats["tasks"]["completed"] == 1
    assert stats["tasks"]["failed"] == 3
