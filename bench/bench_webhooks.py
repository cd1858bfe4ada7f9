"""Webhook benchmark: how fast healthy endpoints are told about events while one endpoint hangs.

One hanging endpoint (accepts the connection, reads the request, never answers) and --healthy
endpoints that answer 200 at once, each on its own port on 127.0.0.1, served by a second process
(this script with --receivers) so they do not share the service's event loop. The service runs
in this process as `jetflow serve` composes it (runtime with projectors, process managers and
timers, embedded nats-server, SQLite; webhooks allowed to reach loopback, every other webhook
setting at its default). Tasks are submitted open loop through the command path at --rate for
--duration s, each with a callback URL: every --hanging-every-th to the hanging endpoint, the
others round-robin over the healthy ones. A delivery's latency is the time its receiver read it
minus the time its task was due to be submitted (time.monotonic, which both processes share):
submit → TaskSubmitted appended → delivery due recorded → the endpoint's lane → POST read.

Reference in the same run: plain httpx POSTs to the same healthy receivers, one after another
(what the network and the receivers cost without jetflow).

Run: .venv/bin/python bench/bench_webhooks.py [--rate 20] [--duration 30] [--healthy 100]
     [--hanging-every 10] [--drain 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from common import emit, load_average, percentile

from adapters.envelope import Metadata
from adapters.nats_server import EmbeddedNatsServer
from api.runtime import Runtime
from api.settings import Settings
from handlers.commands import CommandContext
from handlers.tasks import SubmitTaskRequest, submit_task
from slices.catalogue import CATALOGUE

PORTS_PREFIX = "PORTS "
CONTEXT = CommandContext(Metadata(actor="user:bench"))


# ------------------------------------------------------------------ the receivers' process


async def serve_receivers(healthy: int) -> None:
    """Print the ports (the hanging one first), then a line per request read: port, task, time;
    stop when told to on stdin."""
    stopping = asyncio.Event()

    def receiver(
        hang: bool,
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            port = writer.get_extra_info("sockname")[1]
            try:
                while True:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                    length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
                    body = json.loads(await reader.readexactly(length))
                    print(port, body["task_id"], time.monotonic(), flush=True)
                    if hang:
                        await stopping.wait()
                        break
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        return serve

    servers = [
        await asyncio.start_server(receiver(hang=index == 0), "127.0.0.1", 0)
        for index in range(healthy + 1)
    ]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    print(PORTS_PREFIX + json.dumps(ports), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    stopping.set()
    for server in servers:
        server.close()
    await asyncio.sleep(0.1)  # the hanging handlers return


# ------------------------------------------------------------------ the service's process


async def reference_posts(ports: list[int], count: int) -> list[float]:
    """Round trips of plain POSTs to the healthy receivers, one after another."""
    samples = []
    async with httpx.AsyncClient() as http:
        for i in range(count):
            body = {"task_id": f"reference-{i}"}
            started = time.monotonic()
            await http.post(f"http://127.0.0.1:{ports[i % len(ports)]}/hook", json=body)
            samples.append(time.monotonic() - started)
    return samples


async def main(args: argparse.Namespace) -> None:
    receivers = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--receivers", "--healthy", str(args.healthy),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert receivers.stdout is not None and receivers.stdin is not None
    line = (await receivers.stdout.readline()).decode()
    hanging_port, *healthy_ports = json.loads(line.removeprefix(PORTS_PREFIX))
    arrivals: dict[str, float] = {}
    hanging_reads = 0

    async def read_arrivals() -> None:
        nonlocal hanging_reads
        assert receivers.stdout is not None
        async for raw in receivers.stdout:
            port, task_id, at = raw.decode().split()
            if int(port) == hanging_port:
                hanging_reads += 1
            arrivals.setdefault(task_id, float(at))

    reader = asyncio.create_task(read_arrivals())
    try:
        with tempfile.TemporaryDirectory(prefix="jetflow-bench-") as tmp:
            root = Path(tmp)
            async with EmbeddedNatsServer(root / "nats") as server:
                settings = Settings(
                    nats_url=server.url, data_dir=root / "data", webhook_allow="127.0.0.0/8"
                )
                runtime = Runtime(settings, CATALOGUE)
                await runtime.start()
                try:
                    reference = await reference_posts(healthy_ports, 200)
                    reference_load = load_average()
                    due = await submit_load(runtime, args, hanging_port, healthy_ports)
                    healthy = {t: at for t, (at, port) in due.items() if port != hanging_port}
                    deadline = time.monotonic() + args.drain
                    while time.monotonic() < deadline and not healthy.keys() <= arrivals.keys():
                        await asyncio.sleep(0.1)
                    load = load_average()
                finally:
                    await runtime.stop()
    finally:
        receivers.stdin.write(b"stop\n")
        await receivers.stdin.drain()
        await receivers.wait()
        reader.cancel()
    report(args, due, healthy, arrivals, hanging_reads, reference, reference_load, load)


async def submit_load(
    runtime: Runtime, args: argparse.Namespace, hanging_port: int, healthy_ports: list[int]
) -> dict[str, tuple[float, int]]:
    """Submit tasks open loop; answer each task's due time and the port its callback names."""
    due: dict[str, tuple[float, int]] = {}
    total = int(args.rate * args.duration)
    start = time.monotonic() + 0.5

    every = args.hanging_every

    async def submit(i: int, at: float) -> None:
        if every and i % every == 0:
            port = hanging_port
        else:
            port = healthy_ports[(i - (i // every + 1 if every else 0)) % len(healthy_ports)]
        request = SubmitTaskRequest(
            code="print(1)", owner="bench", callback_url=f"http://127.0.0.1:{port}/hook"
        )
        outcome = await submit_task(runtime.commands, request, CONTEXT)
        due[outcome.aggregate_id] = (at, port)

    pending = []
    for i in range(total):
        at = start + i / args.rate
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        pending.append(asyncio.create_task(submit(i, at)))
    await asyncio.gather(*pending)
    return due


def report(
    args: argparse.Namespace,
    due: dict[str, tuple[float, int]],
    healthy: dict[str, float],
    arrivals: dict[str, float],
    hanging_reads: int,
    reference: list[float],
    reference_load: tuple[float, float, float],
    load: tuple[float, float, float],
) -> None:
    latencies = [(arrivals[t] - at) * 1000 for t, at in healthy.items() if t in arrivals]
    ms = latencies or [float("nan")]
    figures = {
        "rate": args.rate,
        "duration_s": args.duration,
        "healthy_endpoints": args.healthy,
        "hanging_every": args.hanging_every,
        "tasks": len(due),
        "healthy_tasks": len(healthy),
        "delivered": len(latencies),
        "undelivered": len(healthy) - len(latencies),
        "drain_s": args.drain,
        "hanging_reads": hanging_reads,
        "latency_ms": {f"p{q}": percentile(ms, q) for q in (50, 95, 99)} | {"max": max(ms)},
        "reference_ms": {f"p{q}": percentile([r * 1000 for r in reference], q) for q in (50, 99)},
        "reference_load": reference_load,
    }
    lat, ref = figures["latency_ms"], figures["reference_ms"]
    print(f"endpoints: 1 hanging + {args.healthy} healthy (second process, one port each)")
    share = f"every {args.hanging_every}th" if args.hanging_every else "none"
    print(f"tasks: {len(due)} submitted open loop at {args.rate:,.0f}/s for {args.duration:.0f} s, "
          f"{share} to the hanging endpoint")  # fmt: skip
    print(f"healthy deliveries : {len(latencies)} of {len(healthy)} within {args.drain:.0f} s "
          f"after the last submit")  # fmt: skip
    print(f"healthy latency    : p50 {lat['p50']:,.1f} ms  p95 {lat['p95']:,.1f} ms  "
          f"p99 {lat['p99']:,.1f} ms  max {lat['max']:,.1f} ms   (load {load})")  # fmt: skip
    print(f"hanging endpoint   : {hanging_reads} requests read, none answered")
    print(f"plain httpx POST   : p50 {ref['p50']:,.2f} ms  p99 {ref['p99']:,.2f} ms "
          f"(load {reference_load})")  # fmt: skip
    emit("webhooks", figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--healthy", type=int, default=100)
    parser.add_argument(
        "--hanging-every", type=int, default=10, help="0: none to the hanging endpoint (control)"
    )
    parser.add_argument("--drain", type=float, default=30, help="longest wait after the load")
    parser.add_argument("--receivers", action="store_true", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.receivers:
        asyncio.run(serve_receivers(parsed.healthy))
    else:
        asyncio.run(main(parsed))
