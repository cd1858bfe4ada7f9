"""The ``jetflow`` command: serve the API, run a worker, rebuild projections."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from api.settings import Settings
from cli import events, keys, nats_users, parked, retrying, sandboxing, worker
from cli.serve import serve
from cli.violations import load_violations_file

API_KEY_ENV = os.environ.get("JETFLOW_API_KEY")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jetflow", description=__doc__)
    # The installed distribution's version, as /api/v1/health reports it (one source: pyproject).
    parser.add_argument("--version", action="version", version=f"jetflow {version('jetflow')}")
    sub = parser.add_subparsers(dest="command", required=True)

    serving = sub.add_parser("serve", help="run the HTTP API, projectors and process managers")
    serving.add_argument("--host", help="HTTP host (JETFLOW_HOST, default 127.0.0.1)")
    serving.add_argument("--port", type=int, help="HTTP port (JETFLOW_PORT, default 8000)")

    worker.add_parser(sub, API_KEY_ENV)

    sub.add_parser("replay", help="drop every projection and rebuild it from sequence 1")
    events.add_parser(sub)
    keys.add_parser(sub)
    parked.add_parser(sub)
    nats_users.add_parser(sub)

    violations = sub.add_parser(
        "load-violations", help="record the violation catalogue's missing or changed entries"
    )
    violations.add_argument(
        "--file",
        type=Path,
        help="CSV with code,name,description (default: the bundled violations.csv)",
    )

    agent = sub.add_parser("deploy-agent", help="run deployments from a plan file and report")
    agent.add_argument("--api", default="http://127.0.0.1:8000", help="jetflow API base URL")
    agent.add_argument("--plan", required=True, help="TOML plan file with [[steps]] name/run")
    agent.add_argument("--work-dir", default="data/deployments", help="where deployments run")
    agent.add_argument("--agent-id", help="agent id (default: agent-hostname-pid)")
    agent.add_argument("--api-key", default=API_KEY_ENV, help="worker-role key (JETFLOW_API_KEY)")
    agent.add_argument("--poll", type=float, default=1.0, help="seconds between empty claims")
    agent.add_argument("--max-deployments", type=int, default=0, help="stop after N (0: never)")
    retrying.add_arguments(agent)
    sandboxing.add_arguments(agent)

    render = sub.add_parser("render-node", help="simulated render nodes that lease frames")
    render.add_argument("--nats", help="NATS URL (cmd.render.*); default NATS_URL")
    render.add_argument("--nats-user", help="the worker-role NATS user the nodes send as")
    render.add_argument(
        "--nats-seed", type=Path, help="that user's seed file (from `jetflow nats-users create`)"
    )
    render.add_argument("--api", help="use HTTP at this jetflow base URL instead of NATS")
    render.add_argument("--api-key", default=API_KEY_ENV, help="worker-role key for --api")
    render.add_argument("--count", type=int, default=1, help="how many nodes to simulate")
    render.add_argument("--frame-time", default="0", help="seconds per frame: S or MIN-MAX")
    render.add_argument("--failure-rate", type=float, default=0.0, help="0..1")
    render.add_argument("--idle-exit", type=float, help="exit after this many idle seconds")
    render.add_argument("--seed", type=int, help="random seed for timing and failures")
    retrying.add_arguments(render)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.from_env()
    except ValueError as refused:
        raise SystemExit(f"jetflow: {refused}") from None
    if args.command == "serve":
        return asyncio.run(serve(settings, args.host, args.port))
    if args.command == "worker":
        return worker.main(args)
    if args.command == "deploy-agent":
        from adapters.sandbox import OwnProcesses, SharedProcesses
        from clients.deploy_agent import DeployAgent, load_plan

        steps = sandboxing.checked(
            OwnProcesses(args.sandbox_bin), SharedProcesses(), args, "deployment steps"
        )
        if steps is None:
            return 2
        deploy_agent = DeployAgent(
            api=args.api,
            plan=load_plan(Path(args.plan)),
            steps=steps,
            work_dir=Path(args.work_dir).resolve(),
            agent_id=args.agent_id,
            api_key=args.api_key,
            poll_s=args.poll,
            max_deployments=args.max_deployments,
            backoff=retrying.backoff(args),
        )
        return asyncio.run(deploy_agent.run_until_signalled())
    if args.command == "render-node":
        return asyncio.run(_render_nodes(args, settings))
    if args.command == "keys":
        return keys.main(args, settings)
    if args.command == "parked":
        return parked.main(args, settings)
    if args.command == "nats-users":
        return nats_users.main(args, settings)
    if args.command == "events":
        return events.main(args, settings)
    if args.command == "replay":
        from cli.replay import replay_all

        return asyncio.run(replay_all(settings))
    if args.command == "load-violations":
        return asyncio.run(load_violations_file(settings, args.file))
    parser.error(f"unknown command {args.command}")
    return 2


async def _render_nodes(args: argparse.Namespace, settings: Settings) -> int:
    from clients.render_node import NatsIdentity, run_nodes

    low, _, high = args.frame_time.partition("-")
    identity: NatsIdentity | None = None
    if not args.api:
        url = args.nats or settings.nats_url
        if not url:
            raise SystemExit("render-node needs --nats, NATS_URL or --api")
        if not args.nats_user or args.nats_seed is None:
            raise SystemExit("render-node over NATS needs --nats-user and --nats-seed")
        identity = NatsIdentity(url, args.nats_user, args.nats_seed)
    stats = await run_nodes(
        count=args.count,
        nats_identity=identity,
        api=args.api,
        api_key=args.api_key,
        frame_time=(float(low), float(high or low)),
        failure_rate=args.failure_rate,
        idle_exit_s=args.idle_exit,
        seed=args.seed,
        backoff=retrying.backoff(args),
    )
    finished = sum(s.finished for s in stats)
    failed = sum(s.failed for s in stats)
    refused = sum(s.refused for s in stats)
    print(f"render nodes: {finished} frames finished, {failed} failed, {refused} refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
