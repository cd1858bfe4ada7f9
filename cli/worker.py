"""``jetflow worker``: a worker node, its caps (the offer it leases with) and its sandbox."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from adapters.sandbox import Bubblewrap, Unconfined
from cli import retrying, sandboxing
from clients.worker import NodeCaps, Worker

log = logging.getLogger("jetflow.worker")


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], api_key: str | None
) -> None:
    defaults = NodeCaps()
    worker = sub.add_parser("worker", help="lease compute tasks and run them in a sandbox")
    worker.add_argument("--api", default="http://127.0.0.1:8000", help="jetflow API base URL")
    worker.add_argument("--node-id", help="node id (default: hostname-pid)")
    worker.add_argument("--api-key", default=api_key, help="worker-role key (JETFLOW_API_KEY)")
    worker.add_argument("--poll", type=float, default=1.0, help="seconds between empty leases")
    worker.add_argument("--heartbeat", type=float, default=5.0, help="seconds between heartbeats")
    worker.add_argument("--max-tasks", type=int, default=0, help="stop after N tasks (0: never)")
    caps = worker.add_argument_group("caps", "the most one task gets (sent with every lease)")
    caps.add_argument("--cpu", type=float, default=defaults.cpu, help="cores (default: all usable)")
    caps.add_argument("--memory-mb", type=int, default=defaults.memory_mb, help="address space")
    caps.add_argument("--max-timeout-s", type=int, default=defaults.max_timeout_s, help="seconds")
    caps.add_argument(
        "--max-processes", type=int, default=defaults.processes, help="processes and threads"
    )
    caps.add_argument("--allow-network", action="store_true", help="grant tasks that ask network")
    retrying.add_arguments(worker)
    box = worker.add_argument_group("sandbox")
    box.add_argument(
        "--sandbox-bin",
        default=os.environ.get("JETFLOW_SANDBOX_BIN", "bwrap"),
        help="bubblewrap binary (JETFLOW_SANDBOX_BIN, default bwrap)",
    )
    box.add_argument(
        "--task-python",
        default=os.environ.get("JETFLOW_TASK_PYTHON", "/usr/bin/python3"),
        help="interpreter tasks run with, inside the sandbox (JETFLOW_TASK_PYTHON)",
    )
    box.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="run tasks unisolated (never in production)",
    )


def main(args: argparse.Namespace) -> int:
    bubblewrap = Bubblewrap(args.sandbox_bin, args.task_python)
    sandbox = sandboxing.checked(bubblewrap, Unconfined(), args, "submitted tasks")
    if sandbox is None:
        return 2
    if sandbox is bubblewrap and bubblewrap.seccomp is None:
        log.warning("no seccomp filter for this machine: a task may widen its CPU affinity")
    caps = NodeCaps(
        cpu=args.cpu,
        memory_mb=args.memory_mb,
        max_timeout_s=args.max_timeout_s,
        processes=args.max_processes,
        allow_network=args.allow_network,
    )
    log.info("node caps: %s", caps)
    node = Worker(
        api=args.api,
        sandbox=sandbox,
        node_id=args.node_id,
        caps=caps,
        api_key=args.api_key,
        poll_s=args.poll,
        heartbeat_s=args.heartbeat,
        max_tasks=args.max_tasks,
        backoff=retrying.backoff(args),
    )
    return asyncio.run(node.run_until_signalled())
