"""The projectors alone, in their own process: bench_latency's `--experiment split-projectors`.

Measures what recommendation 4 of results_notes.md would give (projectors out of the HTTP
process) with today's code: the same `Runtime`, opened on the service's nats-server and SQLite
file, running `start_handlers(projectors=True, timers=False)` only. It logs (monotonic time,
tasks checkpoint) at every advance, as bench_latency's in-process watcher does, until its stdin
closes, then writes the log as JSON to --out.

Run by bench_latency.py; not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bench_latency import watch

from api.runtime import Runtime
from api.settings import Settings
from slices.catalogue import CATALOGUE


async def main(args: argparse.Namespace) -> None:
    settings = Settings(nats_url=args.nats, data_dir=args.data_dir)
    runtime = Runtime(settings, CATALOGUE)
    await runtime.open()
    log: list[tuple[float, int]] = []
    watcher = asyncio.create_task(watch(runtime.progress, "tasks", log))
    await runtime.start_handlers(projectors=True, timers=False)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the benchmark closes our stdin
    watcher.cancel()
    await runtime.stop()
    await asyncio.to_thread(args.out.write_text, json.dumps(log))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--nats", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    asyncio.run(main(parser.parse_args()))
