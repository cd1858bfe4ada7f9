"""``jetflow replay``: rebuild every projection from the event stream, with a progress bar."""

from __future__ import annotations

import time

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from adapters.sql import default_sqlite_path, readable_sqlite, set_aside
from api.runtime import Runtime
from api.settings import Settings
from handlers.projector import rebuild
from slices.catalogue import CATALOGUE


async def replay_all(settings: Settings) -> int:
    """Projections are derived data: an unreadable SQLite file is set aside and recreated from
    nothing, since everything in it comes back from the stream."""
    database = default_sqlite_path(settings.data_dir.resolve())
    if settings.db_url is None and not readable_sqlite(database):
        print(f"{database} is unreadable: set aside as {set_aside(database).name}, rebuilding")
    runtime = Runtime(settings, CATALOGUE)
    await runtime.open()
    columns = (
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TextColumn("seq {task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[applied]:>10,} events  {task.fields[rate]:>9,.0f} events/s"),
        TimeElapsedColumn(),
    )
    try:
        last_seq = await runtime.store.last_seq()
        with Progress(*columns) as bar:
            for projection in CATALOGUE.projections:
                task = bar.add_task(projection.name, total=max(last_seq, 1), applied=0, rate=0.0)
                started = time.perf_counter()

                def report(
                    applied: int, seq: int, task_id: TaskID = task, since: float = started
                ) -> None:
                    rate = applied / max(time.perf_counter() - since, 1e-9)
                    bar.update(task_id, completed=seq, applied=applied, rate=rate)

                total = await rebuild(
                    runtime.store, runtime.engine, runtime.sessions, projection, report
                )
                elapsed = time.perf_counter() - started
                bar.update(task, completed=max(last_seq, 1))
                bar.console.print(
                    f"{projection.name}: rebuilt from {total} events in {elapsed:.2f} s "
                    f"({total / max(elapsed, 1e-9):,.0f} events/s)"
                )
    finally:
        await runtime.stop()
    return 0
