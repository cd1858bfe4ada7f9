"""Audit: an aggregate's history and its state as of a sequence or an instant, over HTTP and
through the `jetflow events` command line, read from the stream itself."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Service
from tests.test_serve import JETFLOW

pytestmark = pytest.mark.asyncio


async def a_task_that_ran(service: Service) -> dict[str, Any]:
    """Submitted by Ann, leased and completed by node-1: four events, each with its actor."""
    submitted = await service.http.post(
        "/tasks", json={"code": "print(1)", "owner": "ann"}, headers={"X-Correlation-Id": "c-1"}
    )
    task_id = submitted.json()["task_id"]
    await service.http.get("/tasks", params={"wait_for_seq": submitted.json()["seq"]})
    assert (await service.http.post("/nodes/node-1/lease")).status_code == 200
    progress = await service.http.post(
        f"/tasks/{task_id}/progress", json={"node_id": "node-1", "percent": 50}
    )
    done = await service.http.post(
        f"/tasks/{task_id}/result", json={"node_id": "node-1", "result": "1\n"}
    )
    assert done.status_code == 202
    return {
        "task_id": task_id,
        "submitted": submitted.json()["seq"],
        "progress": progress.json()["seq"],
        "done": done.json()["seq"],
    }


async def test_history_and_state_now_and_as_of_a_sequence(service: Service) -> None:
    task = await a_task_that_ran(service)
    audit = (await service.http.get(f"/audit/task/{task['task_id']}")).json()
    assert [e["type"] for e in audit["events"]] == [
        "TaskSubmitted",
        "TaskAssigned",
        "TaskProgressed",
        "TaskCompleted",
    ]
    assert audit["version"] == task["done"]
    assert audit["state"]["status"] == "completed"
    assert audit["events"][0]["correlation_id"] == "c-1"

    then = (
        await service.http.get(
            f"/audit/task/{task['task_id']}", params={"as_of_seq": task["progress"]}
        )
    ).json()
    assert then["version"] == task["progress"]
    assert then["state"]["status"] == "running"
    assert then["state"]["node_id"] == "node-1"
    assert len(then["events"]) == 3


async def test_state_as_of_a_time(service: Service) -> None:
    task = await a_task_that_ran(service)
    events = (await service.http.get(f"/audit/task/{task['task_id']}")).json()["events"]
    submitted_at = events[0]["occurred_at"]
    then = await service.http.get(
        f"/audit/task/{task['task_id']}", params={"as_of_time": submitted_at}
    )
    assert then.json()["state"]["status"] == "pending"
    assert then.json()["version"] == task["submitted"]

    before = await service.http.get(
        f"/audit/task/{task['task_id']}", params={"as_of_time": "2000-01-01T00:00:00Z"}
    )
    assert before.status_code == 404
    assert before.json()["error"]["code"] == "aggregate_not_found"


@pytest.mark.shared_stack
async def test_unknown_aggregates_answer_404(service: Service) -> None:
    unknown_type = await service.http.get("/audit/spaceship/x1")
    assert unknown_type.status_code == 404
    assert unknown_type.json()["error"]["code"] == "unknown_aggregate"
    unknown_id = await service.http.get("/audit/task/nope")
    assert unknown_id.status_code == 404
    assert unknown_id.json()["error"]["code"] == "aggregate_not_found"


async def test_events_filtered_by_type_actor_and_time(service: Service) -> None:
    started = datetime.now(UTC)
    task = await a_task_that_ran(service)
    by_type = (await service.http.get("/audit/events", params={"type": "TaskAssigned"})).json()
    assert [e["aggregate_id"] for e in by_type["events"]] == [task["task_id"]]

    timer = (await service.http.get("/audit/events", params={"actor": "user:admin"})).json()
    assert timer["count"] == 4

    later = (
        await service.http.get("/audit/events", params={"since": datetime.now(UTC).isoformat()})
    ).json()
    assert later["count"] == 0
    window = (
        await service.http.get(
            "/audit/events", params={"since": started.isoformat(), "aggregate": "task", "limit": 2}
        )
    ).json()
    assert [e["seq"] for e in window["events"]] == [task["submitted"], task["submitted"] + 1]
    assert window["next_from_seq"] == task["submitted"] + 2


async def jetflow_events(service: Service, *args: str) -> str:
    settings = service.runtime.settings
    env = {
        **os.environ,
        "NATS_URL": service.runtime.nats_url,
        "JETFLOW_STREAM": settings.stream,
        "JETFLOW_DATA_DIR": str(settings.data_dir),
    }
    process = await asyncio.create_subprocess_exec(
        JETFLOW,
        "events",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_the_events_command_lists_audits_and_exports(
    service: Service, tmp_path: Path
) -> None:
    task = await a_task_that_ran(service)
    tid = task["task_id"]

    listed = await jetflow_events(service, "list", "--aggregate", "task", "--type", "TaskCompleted")
    [line] = listed.splitlines()
    assert f"task/{tid}" in line and "TaskCompleted" in line and "by user:admin" in line

    history = await jetflow_events(service, "history", "task", tid)
    assert [line.split()[3] for line in history.splitlines()] == [
        "TaskSubmitted",
        "TaskAssigned",
        "TaskProgressed",
        "TaskCompleted",
    ]

    state = json.loads(
        await jetflow_events(service, "state", "task", tid, "--as-of-seq", str(task["progress"]))
    )
    assert state["state"]["status"] == "running"
    assert state["version"] == task["progress"]

    exported = tmp_path / "events.jsonl"
    await jetflow_events(service, "export", str(exported), "--id", tid)
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [r["seq"] for r in rows] == list(range(task["submitted"], task["done"] + 1))
    assert rows[0]["payload"]["owner"] == "ann"


async def test_the_events_command_tails_new_events(service: Service) -> None:
    settings = service.runtime.settings
    env = {**os.environ, "NATS_URL": service.runtime.nats_url, "JETFLOW_STREAM": settings.stream}
    first = await service.http.post("/tasks", json={"code": "print(1)"})
    tail = await asyncio.create_subprocess_exec(
        JETFLOW,
        "events",
        "tail",
        "--json",
        "--aggregate",
        "task",
        "--from-seq",
        str(first.json()["seq"]),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert tail.stdout is not None
        seen = json.loads(await asyncio.wait_for(tail.stdout.readline(), 20))
        assert seen["seq"] == first.json()["seq"]
        second = await service.http.post("/tasks", json={"code": "print(2)"})
        pushed = json.loads(await asyncio.wait_for(tail.stdout.readline(), 20))
        assert pushed["seq"] == second.json()["seq"]
    finally:
        tail.terminate()
        await tail.wait()
