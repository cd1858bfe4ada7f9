"""Render benchmark: one 10,000-frame job driven by 8 simulated render nodes as fast as they go.

The service (command subjects, projectors, timers) runs in this process on an embedded
nats-server; the nodes run in a second process (`jetflow render-node --count 8`, NATS transport)
so that both sides compete for the machine's 2 cores as they would in production. Prints frame
events/s through the system (append → projection), the projection lag sampled every 100 ms, and
the time the progress projection needed to catch up after the last frame.

Run: .venv/bin/python bench/bench_render.py [--frames 10000] [--nodes 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from adapters.envelope import Metadata
from adapters.nats_auth import NatsRole
from adapters.nats_server import EmbeddedNatsServer
from api.runtime import Runtime
from api.settings import Settings
from domain.render import RENDER_JOB, CreateRenderJob
from handlers.commands import CommandContext
from projections.base import read_checkpoint
from projections.render import render_jobs
from slices.catalogue import CATALOGUE

JETFLOW = str(Path(sys.executable).parent / "jetflow")


async def main(frames: int, node_count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="jetflow-bench-") as tmp:
        root = Path(tmp)
        async with EmbeddedNatsServer(root / "nats") as server:
            runtime = Runtime(Settings(nats_url=server.url, data_dir=root / "data"), CATALOGUE)
            await runtime.start()
            try:
                seed = root / "render-bench.nk"
                seed.write_bytes(runtime.nats_users.create("render-bench", NatsRole.worker))
                await run(runtime, server.url, seed, frames, node_count)
            finally:
                await runtime.stop()


async def run(runtime: Runtime, url: str, seed: Path, frames: int, node_count: int) -> None:
    command = CreateRenderJob(
        job_id="bench-job", owner="bench", scene_file="bench.ma", render_engine="maya",
        total_frames=frames, test_frames="1", max_frame_retries=2,
    )  # fmt: skip
    created = await runtime.commands.execute(
        RENDER_JOB, "bench-job", command, CommandContext(Metadata(actor="bench"))
    )
    while await read_checkpoint(runtime.sessions, "render") < created.last_seq:
        await asyncio.sleep(0.01)
    first_seq = created.last_seq

    started = time.perf_counter()
    nodes = await asyncio.create_subprocess_exec(
        JETFLOW, "render-node", "--nats", url, "--nats-user", "render-bench",
        "--nats-seed", str(seed), "--count", str(node_count),
        "--idle-exit", "1.0", "--seed", "1", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    lags: list[int] = []
    while nodes.returncode is None:
        last = await runtime.store.last_seq()
        lags.append(last - runtime.progress.applied.get("render", 0))
        try:
            await asyncio.wait_for(nodes.wait(), 0.1)
        except TimeoutError:
            pass
    out, _ = await nodes.communicate()
    last_seq = await runtime.store.last_seq()
    appended_at = time.perf_counter() - 1.0  # the nodes idled 1 s before exiting
    while runtime.progress.applied.get("render", 0) < last_seq:
        await asyncio.sleep(0.005)
    caught_up = time.perf_counter()

    events = last_seq - first_seq
    elapsed = appended_at - started
    async with runtime.sessions() as session:
        row = (await session.execute(select(render_jobs))).one()
    print(out.decode().strip())
    print(f"frames: {frames}, nodes: {node_count} (second process, NATS cmd.render.*)")
    done, failed = row.completed_frames, row.failed_frames
    print(f"job status: {row.status}, frames completed {done}, failed {failed}")
    rate = events / elapsed
    print(f"frame events appended      : {events} in {elapsed:.2f} s = {rate:,.0f} events/s")
    print(f"frames finished per second : {row.completed_frames / elapsed:,.0f}")
    print(
        f"projection lag (events)    : median {statistics.median(lags):.0f}, "
        f"p95 {sorted(lags)[int(len(lags) * 0.95)]}, max {max(lags)}"
    )
    print(f"catch-up after last event  : {(caught_up - appended_at - 1.0) * 1000:.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.frames, args.nodes))
