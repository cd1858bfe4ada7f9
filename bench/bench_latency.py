"""Latency benchmark: command → projection latency at a fixed command rate, and API GET latency.

The service runs in this process as `jetflow serve` composes it (runtime with projectors and
timers, Litestar on uvicorn, embedded nats-server, SQLite; rate limit raised for the load); the
load generator (bench/loadgen.py, aiohttp) runs in a second process and is open-loop: request i
is due at start + i / rate and is sent then regardless of the answers to earlier ones.

Phase 1: POST /api/v1/tasks (admin API key) at --rate for --duration s. The answer carries the
stream sequence of the TaskSubmitted event. Here, a watcher waits on the runtime's
`ProjectionProgress` condition (the signal `?wait_for_seq` readers wake on, raised right after a
batch's transaction commits) and records (time, tasks checkpoint) at every advance. A command's
latency is the first time the checkpoint reached its sequence minus the time the command was due
to be sent: send → appended → projected → readable, including any queueing in the client.
Both processes read CLOCK_MONOTONIC (time.monotonic), which the whole machine shares.

Phase 2, once the projection has caught up with phase 1 (so the reads do not compete with a
projector backlog): GET /api/v1/tasks/{id} of tasks phase 1 created, chosen at random, at
--get-rate for --get-duration s; latency from due time to the complete answer.

Run: .venv/bin/python bench/bench_latency.py [--rate 1000] [--duration 60] [--get-rate 500]
     [--get-duration 30] [--profile FILE] [--get-profile FILE]
     [--experiment o1-rate-limit] [--experiment split-projectors]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvicorn
from common import emit, load_average, percentile, profiled

from adapters.nats_server import EmbeddedNatsServer
from api.app import create_app
from api.consistency import wait_for_seq
from api.runtime import Runtime
from api.settings import Settings
from domain.access import Role
from handlers.access import issue_api_key
from handlers.projector import ProjectionProgress
from projections.access import API_KEYS
from projections.base import read_checkpoint
from slices.catalogue import CATALOGUE

LOADGEN = Path(__file__).parent / "loadgen.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def watch(progress: ProjectionProgress, name: str, log: list[tuple[float, int]]) -> None:
    """Record (monotonic time, checkpoint) each time the projection advances."""
    async with progress.changed:
        while True:
            await progress.changed.wait()
            applied = progress.applied.get(name, 0)
            if not log or applied > log[-1][1]:
                log.append((time.monotonic(), applied))


def summarise(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples] or [float("nan")]
    return {f"p{q}": percentile(ms, q) for q in (50, 95, 99)} | {"max": max(ms)}


def report(args: argparse.Namespace, data: dict[str, Any], log: list[tuple[float, int]]) -> None:
    posts, gets = data["posts"], data["gets"]
    ok = [p for p in posts if p["status"] == 202]
    first_due = posts[0]["due"]
    post_span = max(p["done"] for p in posts) - first_due
    seqs = [s for _, s in log]
    latencies = []
    unprojected = 0
    for p in ok:
        index = bisect.bisect_left(seqs, p["seq"])
        if index == len(log):
            unprojected += 1
            continue
        latencies.append(log[index][0] - p["due"])
    answer = [p["done"] - p["due"] for p in ok]
    figures: dict[str, Any] = {
        "rate": args.rate,
        "duration_s": args.duration,
        "experiments": args.experiment or [],
        "posts_sent": len(posts),
        "posts_ok": len(ok),
        "posts_failed": len(posts) - len(ok),
        "post_failures": Counter(str(p["status"]) for p in posts if p["status"] != 202),
        "post_achieved_per_s": len(ok) / post_span,
        "unprojected": unprojected,
        "post_answer_ms": summarise(answer),
        "projection_ms": summarise(latencies),
        "post_load": data["post_load"],
    }
    print(f"POST /api/v1/tasks, open loop at {args.rate:,.0f}/s for {args.duration:.0f} s")
    failures = dict(figures["post_failures"])
    achieved = figures["post_achieved_per_s"]
    print(f"  sent {len(posts)}, 202 {len(ok)}, failed {len(posts) - len(ok)} {failures}, "
          f"achieved {achieved:,.0f}/s")  # fmt: skip
    for label, key in (("answer (202)", "post_answer_ms"), ("command→projection", "projection_ms")):
        s = figures[key]
        print(f"  {label:<20}: p50 {s['p50']:7.1f} ms  p95 {s['p95']:7.1f} ms  "
              f"p99 {s['p99']:7.1f} ms  max {s['max']:7.1f} ms")  # fmt: skip
    if gets:
        good = [g for g in gets if g["status"] == 200]
        span = max(g["done"] for g in gets) - gets[0]["due"]
        figures |= {
            "get_rate": args.get_rate,
            "get_duration_s": args.get_duration,
            "gets_sent": len(gets),
            "gets_ok": len(good),
            "get_achieved_per_s": len(good) / span,
            "get_ms": summarise([g["done"] - g["due"] for g in good]),
            "get_load": data["get_load"],
        }
        s = figures["get_ms"]
        print(f"GET /api/v1/tasks/{{id}}, open loop at {args.get_rate:,.0f}/s "
              f"for {args.get_duration:.0f} s: 200 {len(good)} of {len(gets)}, "
              f"achieved {figures['get_achieved_per_s']:,.0f}/s")  # fmt: skip
        print(f"  answer              : p50 {s['p50']:7.1f} ms  p95 {s['p95']:7.1f} ms  "
              f"p99 {s['p99']:7.1f} ms  max {s['max']:7.1f} ms")  # fmt: skip
    emit("latency", figures)


def o1_rate_limit_history() -> None:
    """Experiment (--experiment o1-rate-limit, this process only; service code is untouched):
    Litestar's RateLimitMiddleware keeps one timestamp per request in the window and JSON-decodes
    and re-encodes the whole list on every request, O(requests per window) each. This keeps the
    same list in memory and appends to it, to measure what an O(1) limiter would gain."""
    from time import time as now

    from litestar.middleware.rate_limit import DURATION_VALUES, CacheObject, RateLimitMiddleware

    histories: dict[str, CacheObject] = {}

    async def retrieve(self: RateLimitMiddleware, key: str, store: Any) -> CacheObject:
        cached = histories.get(key)
        if cached is None or cached.reset <= int(now()):
            cached = histories[key] = CacheObject([], int(now()) + DURATION_VALUES[self.unit])
        return cached

    async def record(
        self: RateLimitMiddleware, key: str, cache_object: CacheObject, store: Any
    ) -> None:
        cache_object.history.append(int(now()))

    RateLimitMiddleware.retrieve_cached_history = retrieve  # type: ignore[method-assign]
    RateLimitMiddleware.set_cached_history = record  # type: ignore[method-assign]


async def main(args: argparse.Namespace) -> None:
    experiments = set(args.experiment or ())
    if "o1-rate-limit" in experiments:
        o1_rate_limit_history()
    split = "split-projectors" in experiments
    with tempfile.TemporaryDirectory(prefix="jetflow-latency-") as tmp:
        root = Path(tmp)
        async with EmbeddedNatsServer(root / "nats") as nats_server:
            settings = Settings(
                nats_url=nats_server.url, data_dir=root / "data", rate_limit_per_minute=10**9
            )
            runtime = Runtime(settings, CATALOGUE)
            await runtime.start(projectors=not split)
            projectors = await start_projector_process(nats_server.url, root) if split else None
            log: list[tuple[float, int]] = []
            watcher = asyncio.create_task(watch(runtime.progress, "tasks", log))
            port = free_port()
            server = uvicorn.Server(
                uvicorn.Config(create_app(runtime), port=port, log_level="warning")
            )
            serving = asyncio.create_task(server.serve())
            try:
                key, outcome = await issue_api_key(runtime.commands, Role.admin, "bench")
                await wait_for_seq(runtime, (API_KEYS,), outcome.last_seq)
                while not server.started:
                    await asyncio.sleep(0.01)
                data = await drive(args, runtime, f"http://127.0.0.1:{port}", key, root)
            finally:
                watcher.cancel()
                server.should_exit = True
                await serving
                if projectors is not None:
                    log = await stop_projector_process(projectors, root)
                await runtime.stop()
        report(args, data, log)


async def start_projector_process(url: str, root: Path) -> asyncio.subprocess.Process:
    command = [
        sys.executable, str(Path(__file__).parent / "projector_proc.py"), "--nats", url,
        "--data-dir", str(root / "data"), "--out", str(root / "projected.json"),
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    await process.stdout.readline()  # "ready"
    return process


async def stop_projector_process(
    process: asyncio.subprocess.Process, root: Path
) -> list[tuple[float, int]]:
    assert process.stdin is not None
    process.stdin.close()
    await process.wait()
    raw = json.loads(await asyncio.to_thread((root / "projected.json").read_text))
    return [(t, seq) for t, seq in raw]


async def loadgen(base: str, key: str, out: Path, phase: str, *options: str) -> list[Any]:
    """Run one phase of the load generator as a second process; return its records."""
    command = [sys.executable, str(LOADGEN), phase, "--base", base, "--out", str(out), *options]
    env = {**os.environ, "BENCH_API_KEY": key}
    process = await asyncio.create_subprocess_exec(*command, env=env)
    if await process.wait() != 0:
        raise RuntimeError(f"load generator ({phase}) failed with exit code {process.returncode}")
    records: list[Any] = json.loads(await asyncio.to_thread(out.read_text))
    return records


async def drive(
    args: argparse.Namespace, runtime: Runtime, base: str, key: str, root: Path
) -> dict[str, Any]:
    """POST phase (profiled if asked), wait for the projection to catch up, then GET phase."""
    rate = ["--rate", str(args.rate), "--duration", str(args.duration)]
    with profiled(args.profile):
        posts = await loadgen(base, key, root / "posts.json", "post", *rate)
    data: dict[str, Any] = {"posts": posts, "post_load": load_average(), "gets": []}
    last = max((p["seq"] or 0) for p in posts)
    deadline = time.monotonic() + 120
    while await read_checkpoint(runtime.sessions, "tasks") < last and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    ids = [p["task_id"] for p in posts if p["task_id"]]
    if args.get_duration > 0 and ids:
        await asyncio.to_thread((root / "ids.json").write_text, json.dumps(ids))
        rate = ["--rate", str(args.get_rate), "--duration", str(args.get_duration)]
        ids_file = ["--ids", str(root / "ids.json")]
        with profiled(args.get_profile):
            data["gets"] = await loadgen(base, key, root / "gets.json", "get", *rate, *ids_file)
        data["get_load"] = load_average()
    return data


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--get-rate", type=float, default=500)
    parser.add_argument("--get-duration", type=float, default=30)
    parser.add_argument("--profile", help="py-spy the service during the POST phase (raw)")
    parser.add_argument("--get-profile", help="py-spy the service during the GET phase (raw)")
    parser.add_argument(
        "--experiment",
        action="append",
        choices=["o1-rate-limit", "split-projectors"],
        help="o1-rate-limit: see o1_rate_limit_history; split-projectors: bench/projector_proc.py",
    )
    asyncio.run(main(parser.parse_args()))
