"""Projections are a pure function of the stream: a crash, a redelivery or a rebuild from
sequence 1 ends in exactly the same rows."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import select

from api import consistency
from api.runtime import Runtime
from handlers.projector import consumer_name, rebuild
from projections.base import apply_batch, checkpoints
from slices.catalogue import CATALOGUE
from tests.conftest import Service

ServiceFactory = Callable[..., Awaitable[Service]]


async def dump(runtime: Runtime) -> list[str]:
    """Every projection row, in primary-key order, as text: equal dumps mean equal bytes."""
    lines: list[str] = []
    async with runtime.sessions() as session:
        for projection in CATALOGUE.projections:
            for table in (*projection.tables, checkpoints):
                query = select(table).order_by(*table.primary_key.columns)
                lines.extend(f"{table.name} {tuple(r)!r}" for r in await session.execute(query))
    return lines


async def settle(service: Service) -> None:
    """Wait until every projection has applied the whole stream."""
    last = await service.runtime.store.last_seq()
    await consistency.wait_for_seq(service.runtime, CATALOGUE.projections, last)


async def workload(service: Service, tasks: int = 30) -> None:
    """A mixed history: submissions, leases, progress, results, failures, cancels, heartbeats."""
    rng = random.Random(7)
    http = service.http
    ids = []
    for i in range(tasks):
        body = {"code": f"print({i})", "priority": rng.randint(0, 10), "timeout": 60}
        ids.append((await http.post("/tasks", json=body)).json())
    await http.get("/tasks", params={"wait_for_seq": ids[-1]["seq"]})
    for n in range(3):
        await http.post(f"/nodes/node-{n}/heartbeat", json={"resources": {"cpu_cores": n + 1}})
    for round_ in range(tasks // 2):
        node = f"node-{round_ % 3}"
        lease = await http.post(f"/nodes/{node}/lease")
        if lease.status_code != 200:
            continue
        task_id = lease.json()["task_id"]
        await http.post(f"/tasks/{task_id}/progress", json={"node_id": node, "percent": 30})
        outcome = rng.choice(["completed", "failed", "running"])
        if outcome != "running":
            await http.post(
                f"/tasks/{task_id}/result",
                json={"node_id": node, "outcome": outcome, "result": "ok", "error": "boom"},
            )
    for submitted in ids[-3:]:
        await http.post(f"/tasks/{submitted['task_id']}/cancel", json={"reason": "enough"})
    await render_workload(service, rng)


async def render_workload(service: Service, rng: random.Random) -> None:
    """Render jobs with test frames, finished, failed, retried and cancelled frames."""
    http = service.http
    job = {"unionid": "ann", "oss_file_path": "a.ma", "render_engine": "maya", "ram": 32}
    gated = (
        await http.post(
            "/render-jobs",
            json=job | {"total_frames": 6, "test_frames": "3", "stop_after_test": True},
        )
    ).json()["data"]
    other = (await http.post("/render-jobs", json=job | {"total_frames": 5})).json()["data"]
    await http.get("/render-jobs", params={"wait_for_seq": other["seq"]})
    for step in range(14):
        lease = await http.post(f"/render-nodes/rn-{step % 2}/lease")
        if lease.status_code != 200:
            await http.post(f"/render-jobs/{gated['id']}/resume")
            await http.get(
                "/render-jobs", params={"wait_for_seq": await service.runtime.store.last_seq()}
            )
            continue
        frame = lease.json()["data"]
        path = f"/render-jobs/{frame['task_id']}/frames/{frame['frame_number']}"
        if rng.random() < 0.3:
            await http.post(f"{path}/fail", json={"node_id": f"rn-{step % 2}", "error": "crash"})
        else:
            await http.post(
                f"{path}/finish",
                json={
                    "node_id": f"rn-{step % 2}",
                    "output_path": "o.exr",
                    "output_size": 10,
                    "output_hash": "cd" * 16,
                    "render_time": rng.uniform(1, 9),
                },
            )
    await http.post(f"/render-jobs/{other['id']}/cancel", json={"reason": "enough"})
    await http.post(
        "/scene/analyse",
        json={
            "scene_file_hash": "ab" * 16,
            "scene_file": "a.ma",
            "assets": [{"path": "t.png", "size": 3, "exists": True}],
        },
    )


async def rebuild_all(runtime: Runtime) -> None:
    await runtime.stop_background()
    for projection in CATALOGUE.projections:
        await rebuild(runtime.store, runtime.engine, runtime.sessions, projection)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_rebuild_from_sequence_1_gives_identical_rows(service: Service) -> None:
    await workload(service)
    await settle(service)
    live = await dump(service.runtime)
    for table in ("tasks", "nodes", "render_jobs", "render_frames", "scene_analyses"):
        assert any(line.startswith(f"{table} ") for line in live), table
    assert any("'finished'" in line for line in live if line.startswith("render_frames "))

    await rebuild_all(service.runtime)

    assert await dump(service.runtime) == live


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_projector_killed_mid_load_resumes_with_exact_rows(
    service_factory: ServiceFactory,
) -> None:
    first = await service_factory()
    submissions = [first.http.post("/tasks", json={"code": f"print({i})"}) for i in range(150)]
    writes = asyncio.gather(*submissions)
    await asyncio.sleep(0.05)
    await first.runtime.stop_background()  # the projector dies wherever it was
    answers = await writes
    assert {a.status_code for a in answers} == {202}
    applied_before = first.runtime.progress.applied.get("tasks", 0)

    second = await service_factory()  # same stream, same database: a restart
    await settle(second)
    resumed = await dump(second.runtime)
    rows = [line for line in resumed if line.startswith("tasks ")]
    assert len(rows) == 150
    assert applied_before < await second.runtime.store.last_seq()

    await rebuild_all(second.runtime)
    assert await dump(second.runtime) == resumed


async def test_a_batch_committed_but_never_acknowledged_is_not_applied_twice(
    service_factory: ServiceFactory,
) -> None:
    first = await service_factory(projectors=False)
    for i in range(20):
        await first.http.post("/tasks", json={"code": f"print({i})"})
    runtime = first.runtime
    tasks_projection = CATALOGUE.projections[0]
    # Create the durable consumer as a projector would, fetch a batch, commit it, then "crash"
    # before the acknowledgement.
    from handlers.projector import prepare_consumer

    await prepare_consumer(runtime.store.js, runtime.store.stream, tasks_projection, 0, 500)
    sub = await runtime.store.js.pull_subscribe_bind(
        durable=consumer_name(tasks_projection), stream=runtime.store.stream
    )
    msgs = await sub.fetch(20, timeout=5)
    events = [runtime.store.decode(m) for m in msgs]
    await apply_batch(runtime.sessions, tasks_projection, events)
    await sub.unsubscribe()

    second = await service_factory()
    await settle(second)
    live = await dump(second.runtime)
    assert len([line for line in live if line.startswith("tasks ")]) == 20
    await rebuild_all(second.runtime)
    assert await dump(second.runtime) == live


async def test_read_your_writes_waits_for_the_projection(service_factory: ServiceFactory) -> None:
    writer = await service_factory(projectors=False, wait_max_s=0.3)
    submitted = (await writer.http.post("/tasks", json={"code": "print(1)"})).json()

    behind = await writer.http.get(
        f"/tasks/{submitted['task_id']}", params={"wait_for_seq": submitted["seq"]}
    )
    assert behind.status_code == 503
    assert behind.json()["error"]["code"] == "projection_behind"
    assert behind.headers["Retry-After"] == "1"

    reader = await service_factory()
    answer = await reader.http.get(
        f"/tasks/{submitted['task_id']}", params={"wait_for_seq": submitted["seq"]}
    )
    assert answer.status_code == 200
    assert answer.json()["seq"] == submitted["seq"]


@pytest.mark.shared_stack
async def test_waiting_for_a_sequence_outside_the_projection_returns(service: Service) -> None:
    beat = (await service.http.post("/nodes/n1/heartbeat")).json()
    answer = await service.http.get("/tasks", params={"wait_for_seq": beat["seq"]})
    assert answer.status_code == 200
