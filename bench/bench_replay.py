"""Replay benchmark: rebuild the tasks projection from N recorded events, jetflow against the
`eventsourcing` library (9.x) doing the same append and projection work on SQLite in this run.

jetflow: N `TaskSubmitted` envelopes (one task each, encoded by `adapters.envelope.encode`, the
same bytes the command path records) are published straight to the JETFLOW stream with nats-py
`publish_async` (the fast path for loading; the command path is measured by bench_foundation),
then `handlers.projector.rebuild` of the tasks projection runs from sequence 1: the code
`jetflow replay` runs (batched direct gets of 1,000 events, one transaction per page with the
checkpoint).

eventsourcing: an equivalent `Task` aggregate whose creation event carries the same fields, N
aggregates saved in batches of 1,000 per `Application.save` to its SQLite application recorder,
then a `Projection` over a `SQLiteTrackingRecorder` view writing the same row (same table and
indexes) with its tracking record, one transaction per event as the library's projections do.
Its `ProjectionRunner` needs a recorder with subscriptions (PostgreSQL or POPO; the SQLite
recorder raises NotImplementedError), so this script drives the projection the way the runner's
`ApplicationSubscription` does: read notifications in pages of 1,000 after the tracked position,
map each to its domain event, call `process_event(event, Tracking(...))`. Both sides use SQLite
WAL with `synchronous=NORMAL` (jetflow's setting; the library's connections are tuned to match).

Run: .venv/bin/python bench/bench_replay.py [--events 1000000] [--skip-eventsourcing]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from dataclasses import replace
from functools import singledispatchmethod
from importlib.metadata import version
from pathlib import Path
from typing import Any
from uuid import UUID

import nats
from common import emit, load_average, profiled
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.sqlite import SQLiteConnectionPool, SQLiteTrackingRecorder
from eventsourcing.utils import get_topic
from sqlalchemy import func, select

from adapters.envelope import Metadata, encode, subject_for
from adapters.nats_server import EmbeddedNatsServer
from api.runtime import Runtime
from api.settings import Settings
from domain.tasks import Resources, TaskSubmitted
from handlers.projector import rebuild
from projections.tasks import TASKS, tasks
from slices.catalogue import CATALOGUE

IN_FLIGHT = 1000
PAGE = 1000
CODE = "print('hello from a benchmark')"


# ------------------------------------------------------------------ jetflow


async def load_jetflow(url: str, stream: str, count: int) -> float:
    """Publish ``count`` correctly-encoded TaskSubmitted envelopes; return events/s."""
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=IN_FLIGHT)
    meta = Metadata(actor="user:bench")
    started = time.perf_counter()
    for i in range(count):
        task_id = f"t{i}"
        submitted = TaskSubmitted(
            task_id=task_id, code=CODE, timeout=300, resources=Resources(), priority=0,
            owner="bench", max_attempts=3,
        )  # fmt: skip
        subject = subject_for("task", task_id, "TaskSubmitted")
        await js.publish_async(subject, encode("task", task_id, submitted, meta), stream=stream)
    await js.publish_async_completed()
    elapsed = time.perf_counter() - started
    await nc.close()
    return count / elapsed


async def jetflow_side(root: Path, count: int, profile: str | None) -> dict[str, Any]:
    async with EmbeddedNatsServer(root / "nats") as server:
        settings = replace(Settings(), nats_url=server.url, data_dir=root / "jetflow")
        runtime = Runtime(settings, CATALOGUE)
        await runtime.open()
        try:
            append_rate = await load_jetflow(server.url, settings.stream, count)
            append_load = load_average()
            print(f"jetflow load (raw publish of encoded envelopes): {append_rate:10,.0f} events/s")
            last_report = [time.perf_counter()]

            def progress(applied: int, seq: int) -> None:
                if time.perf_counter() - last_report[0] > 10:
                    last_report[0] = time.perf_counter()
                    print(f"  rebuild at seq {seq:,}: {applied:,} applied", flush=True)

            with profiled(profile):
                started = time.perf_counter()
                applied = await rebuild(
                    runtime.store, runtime.engine, runtime.sessions, TASKS, progress
                )
                elapsed = time.perf_counter() - started
            async with runtime.sessions() as session:
                rows = await session.scalar(select(func.count()).select_from(tasks))
        finally:
            await runtime.stop()
    assert applied == count and rows == count, f"rebuilt {applied} events into {rows} rows"
    return {
        "jetflow_append_eps": append_rate,
        "jetflow_append_load": append_load,
        "jetflow_replay_eps": count / elapsed,
        "jetflow_replay_s": elapsed,
        "jetflow_replay_load": load_average(),
    }


# ------------------------------------------------------------------ eventsourcing


class Task(Aggregate):
    """The same creation fact as jetflow's TaskSubmitted."""

    @event("Submitted")
    def __init__(
        self, task_id: str, code: str, timeout: int, cpu: float, memory: int, priority: int,
        owner: str, max_attempts: int,
    ) -> None:  # fmt: skip
        self.task_id = task_id
        self.code = code
        self.timeout = timeout
        self.cpu = cpu
        self.memory = memory
        self.priority = priority
        self.owner = owner
        self.max_attempts = max_attempts


class Tasks(Application[UUID]):
    pass


TASK_COLUMNS = (
    "task_id, owner, code, timeout, cpu, memory, priority, max_attempts, status, attempt,"
    " node_id, lease_deadline, progress, result, error, submitted_at, started_at, finished_at,"
    " run_time_s, last_seq"
)


class TaskView(SQLiteTrackingRecorder):
    """The materialised view: jetflow's tasks table (same columns and indexes) plus tracking."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS tasks (task_id VARCHAR(128) PRIMARY KEY,"
            " owner VARCHAR(256) NOT NULL, code TEXT NOT NULL, timeout INTEGER NOT NULL,"
            " cpu FLOAT NOT NULL, memory INTEGER NOT NULL, priority INTEGER NOT NULL,"
            " max_attempts INTEGER NOT NULL, status VARCHAR(16) NOT NULL,"
            " attempt INTEGER NOT NULL, node_id VARCHAR(128), lease_deadline DATETIME,"
            " progress FLOAT NOT NULL, result TEXT, error TEXT, submitted_at DATETIME NOT NULL,"
            " started_at DATETIME, finished_at DATETIME, run_time_s FLOAT,"
            " last_seq BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS ix_tasks_queue ON tasks (status, priority, submitted_at)",
            "CREATE INDEX IF NOT EXISTS ix_tasks_node ON tasks (node_id, status)",
        ]

    def insert_task(self, row: tuple[Any, ...], tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({','.join('?' * 20)})", row)
            self._insert_tracking(cursor, tracking)


class TaskProjection(Projection[TaskView]):
    name = "tasks"
    topics = (get_topic(Task.Submitted),)

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Events this view does not show are only tracked."""

    @process_event.register(Task.Submitted)
    def _(self, e: Any, tracking: Tracking) -> None:
        row = (
            e.task_id, e.owner, e.code, e.timeout, e.cpu, e.memory, e.priority, e.max_attempts,
            "pending", 0, None, None, 0.0, None, None, e.timestamp.isoformat(" "), None, None,
            None, tracking.notification_id,
        )  # fmt: skip
        self.view.insert_task(row, tracking)


def _tuned_connections() -> None:
    """Give the library's SQLite connections jetflow's synchronous=NORMAL (it leaves FULL)."""
    original = SQLiteConnectionPool._create_connection

    def create(pool: SQLiteConnectionPool) -> Any:
        connection = original(pool)
        connection._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
        return connection

    SQLiteConnectionPool._create_connection = create  # type: ignore[method-assign]


def eventsourcing_side(root: Path, count: int) -> dict[str, Any]:
    _tuned_connections()
    app = Tasks(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(root / "es.db")}
    )
    started = time.perf_counter()
    for start in range(0, count, PAGE):
        batch = [
            Task(f"t{i}", CODE, 300, 1.0, 512, 0, "bench", 3)
            for i in range(start, min(start + PAGE, count))
        ]
        app.save(*batch)
    append_rate = count / (time.perf_counter() - started)
    append_load = load_average()
    print(f"eventsourcing append (save of 1,000 aggregates)  : {append_rate:10,.0f} events/s")

    view = _view(root / "es-view.db")
    projection = TaskProjection(view=view)
    started = time.perf_counter()
    position = view.max_tracking_id(app.name) or 0
    while True:
        page = app.recorder.select_notifications(
            start=position, limit=PAGE, topics=projection.topics, inclusive_of_start=False
        )
        if not page:
            break
        for notification in page:
            domain_event = app.mapper.to_domain_event(notification)
            projection.process_event(domain_event, Tracking(app.name, notification.id))
        position = page[-1].id
    elapsed = time.perf_counter() - started
    app.close()
    with sqlite3.connect(root / "es-view.db") as db:
        rows = db.execute("SELECT count(*) FROM tasks").fetchone()[0]
    assert rows == count, f"eventsourcing projected {rows} rows of {count}"
    return {
        "es_append_eps": append_rate,
        "es_append_load": append_load,
        "es_replay_eps": count / elapsed,
        "es_replay_s": elapsed,
        "es_replay_load": load_average(),
    }


def _view(path: Path) -> TaskView:
    """The view's own SQLite database, built by the library's infrastructure factory."""
    from eventsourcing.persistence import InfrastructureFactory

    factory = InfrastructureFactory.construct(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    )
    return factory.tracking_recorder(TaskView)  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--skip-eventsourcing", action="store_true")
    parser.add_argument("--profile", help="py-spy the jetflow rebuild into this file (raw)")
    args = parser.parse_args()
    count = args.events
    figures: dict[str, Any] = {"events": count, "es_version": version("eventsourcing")}
    work = Path(__file__).parent / ".data"  # on disk, not a tmpfs; ignored by git
    work.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="replay-", dir=work) as tmp:
        root = Path(tmp)
        figures |= asyncio.run(jetflow_side(root, count, args.profile))
        print(
            f"jetflow replay (rebuild tasks from seq 1)         : "
            f"{figures['jetflow_replay_eps']:10,.0f} events/s ({figures['jetflow_replay_s']:.1f} s)"
        )
        if not args.skip_eventsourcing:
            figures |= eventsourcing_side(root, count)
            print(
                f"eventsourcing replay (Projection, SQLite view)    : "
                f"{figures['es_replay_eps']:10,.0f} events/s ({figures['es_replay_s']:.1f} s)"
            )
            ratio = figures["jetflow_replay_eps"] / figures["es_replay_eps"]
            figures["replay_ratio"] = ratio
            print(f"jetflow / eventsourcing replay                    : {ratio:10.2f}x")
    emit("replay", figures)


if __name__ == "__main__":
    main()
