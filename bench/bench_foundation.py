"""Foundation benchmark: the command path and the projector against their physical limits.

Prints, from one run on this machine:
- events/s appended through the command path (load + decide + append with optimistic
  concurrency, ~1,000 commands in flight) vs raw nats-py JetStream async publish of messages of
  the same size to a stream of the same kind;
- events/s applied by the projector (durable consumer, batch transactions, checkpoint) vs raw
  SQLite executemany of the same rows;
- the time to load one aggregate of 1,000 events.

Run: .venv/bin/python bench/bench_foundation.py [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import nats
from common import emit, load_average

from adapters.envelope import Metadata, encode
from adapters.nats_server import EmbeddedNatsServer
from api.runtime import Runtime
from api.settings import Settings
from domain.tasks import TASK, Resources, SubmitTask, TaskProgressed, TaskSubmitted
from handlers.commands import CommandContext
from projections.base import read_checkpoint
from slices.catalogue import CATALOGUE

IN_FLIGHT = 1000


def sample_event(task_id: str) -> TaskSubmitted:
    return TaskSubmitted(
        task_id=task_id,
        code="print('hello from a benchmark')",
        timeout=300,
        resources=Resources(),
        priority=0,
        owner="bench",
        max_attempts=3,
    )


async def raw_publish(url: str, count: int, body: bytes) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=IN_FLIGHT)
    await js.add_stream(name="RAWBENCH", subjects=["raw.>"], storage="file")
    started = time.perf_counter()
    for i in range(count):
        await js.publish_async(f"raw.task.{i}.TaskSubmitted", body)
    await js.publish_async_completed()
    elapsed = time.perf_counter() - started
    await js.delete_stream("RAWBENCH")
    await nc.close()
    return count / elapsed


async def command_path(runtime: Runtime, count: int) -> float:
    gate = asyncio.Semaphore(IN_FLIGHT)
    context = CommandContext(Metadata(actor="bench"))

    async def one(i: int) -> None:
        async with gate:
            task_id = f"bench-{i}"
            command = SubmitTask(task_id=task_id, code="print('hello from a benchmark')")
            await runtime.commands.execute(TASK, task_id, command, context)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - started)


async def projector(runtime: Runtime, count: int) -> float:
    target = await runtime.store.last_seq()
    started = time.perf_counter()
    await runtime.start_handlers(projectors=True, timers=False)
    while await read_checkpoint(runtime.sessions, "tasks") < target:
        await asyncio.sleep(0.01)
    return count / (time.perf_counter() - started)


def raw_sqlite(path: Path, count: int) -> float:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE tasks (task_id TEXT PRIMARY KEY, owner TEXT, code TEXT, timeout INT,"
        " cpu REAL, memory INT, priority INT, max_attempts INT, status TEXT, attempt INT,"
        " node_id TEXT, lease_deadline TEXT, progress REAL, result TEXT, error TEXT,"
        " submitted_at TEXT, started_at TEXT, finished_at TEXT, run_time_s REAL, last_seq INT)"
    )
    rows = [
        (f"bench-{i}", "bench", "print('hello from a benchmark')", 300, 1.0, 512, 0, 3,
         "pending", 0, None, None, 0.0, None, None, "2026-01-01 00:00:00", None, None, None, i)
        for i in range(count)
    ]  # fmt: skip
    started = time.perf_counter()
    for start in range(0, count, 500):  # the same batch size as the projector's transactions
        with db:
            db.executemany(
                "INSERT INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows[start : start + 500],
            )
    elapsed = time.perf_counter() - started
    db.close()
    return count / elapsed


async def aggregate_load(runtime: Runtime) -> float:
    store = runtime.store
    version = (await store.append("task", "long", [sample_event("long")], 0)).last_seq
    for _ in range(10):
        events = [
            TaskProgressed(task_id="long", node_id="n", percent=1, message="") for _ in range(100)
        ]
        version = (await store.append("task", "long", events, version)).last_seq
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        await store.load(TASK, "long")
        timings.append(time.perf_counter() - started)
    return sorted(timings)[len(timings) // 2] * 1000


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="jetflow-bench-") as tmp:
        root = Path(tmp)
        async with EmbeddedNatsServer(root / "nats") as server:
            body = encode("task", "bench-0", sample_event("bench-0"), Metadata(actor="bench"))
            raw_rate = await raw_publish(server.url, count, body)
            loads = {"raw_publish": load_average()}
            settings = replace(Settings(), nats_url=server.url, data_dir=root / "data")
            runtime = Runtime(settings, CATALOGUE)
            await runtime.open()
            try:
                cmd_rate = await command_path(runtime, count)
                loads["command_path"] = load_average()
                load_ms = await aggregate_load(runtime)
                proj_rate = await projector(runtime, count + 1001)
                loads["projector"] = load_average()
            finally:
                await runtime.stop()
        sqlite_rate = raw_sqlite(root / "raw.db", count)
        loads["raw_sqlite"] = load_average()
    print(f"events: {count}, {IN_FLIGHT} in flight, event size {len(body)} bytes")
    print(f"raw nats-py JetStream publish_async : {raw_rate:10,.0f} events/s")
    print(
        f"command path (load+decide+append)   : {cmd_rate:10,.0f} events/s"
        f"  ({cmd_rate / raw_rate:.0%} of raw)"
    )
    print(f"raw SQLite executemany              : {sqlite_rate:10,.0f} rows/s")
    print(
        f"projector (consume+apply+checkpoint): {proj_rate:10,.0f} events/s"
        f"  ({proj_rate / sqlite_rate:.0%} of raw)"
    )
    print(f"load of a 1,001-event aggregate     : {load_ms:10.1f} ms (median of 20)")
    emit(
        "foundation",
        {
            "events": count,
            "event_bytes": len(body),
            "raw_publish_eps": raw_rate,
            "command_path_eps": cmd_rate,
            "raw_sqlite_rps": sqlite_rate,
            "projector_eps": proj_rate,
            "aggregate_load_ms": load_ms,
            "loads": loads,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().events))
