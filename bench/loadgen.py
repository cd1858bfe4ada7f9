"""Open-loop HTTP load generator, run by bench_latency.py as a second process.

Open loop: request i is due at start + i / rate and is sent then whatever happened to the
earlier ones (each request is its own task), so a slow server cannot slow the offered load down
and hide its own latency (no coordinated omission): every latency is counted from the due time,
not from when the request finally left. aiohttp rather than httpx because at 1,000 requests/s
the client's own CPU matters on a 2-core machine (aiohttp costs a fraction per request).

`post` POSTs /api/v1/tasks at --rate for --duration s; `get` GETs /api/v1/tasks/{id} of the
tasks listed in --ids (those `post` created) at --rate for --duration s. The admin key comes in
BENCH_API_KEY (not argv, where `ps` would show it). Times are time.monotonic()
(CLOCK_MONOTONIC, shared by every process on the machine), written as JSON to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

CODE = "print('hello from a benchmark')"


async def open_loop(
    rate: float, duration: float, send: Callable[[int, float], Awaitable[dict[str, Any]]]
) -> list[dict[str, Any]]:
    count = int(rate * duration)
    start = time.monotonic() + 0.05
    pending: list[asyncio.Task[dict[str, Any]]] = []
    for i in range(count):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(send(i, due)))
    return list(await asyncio.gather(*pending))


async def main(args: argparse.Namespace) -> None:
    headers = {"X-API-Key": os.environ["BENCH_API_KEY"]}
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(
        args.base, headers=headers, connector=connector, timeout=timeout
    ) as http:

        async def post(i: int, due: float) -> dict[str, Any]:
            body = {"code": CODE, "owner": "bench"}
            sent = time.monotonic()
            try:
                async with http.post("/api/v1/tasks", json=body) as answer:
                    data = await answer.json() if answer.status == 202 else {}
                    status: int | str = answer.status
            except (aiohttp.ClientError, TimeoutError) as error:
                data, status = {}, type(error).__name__
            return {
                "due": due, "sent": sent, "done": time.monotonic(), "status": status,
                "seq": data.get("seq"), "task_id": data.get("task_id"),
            }  # fmt: skip

        ids = json.loads(args.ids.read_text()) if args.ids else []
        chooser = random.Random(1)

        async def get(i: int, due: float) -> dict[str, Any]:
            sent = time.monotonic()
            try:
                async with http.get(f"/api/v1/tasks/{chooser.choice(ids)}") as answer:
                    await answer.read()
                    status: int | str = answer.status
            except (aiohttp.ClientError, TimeoutError) as error:
                status = type(error).__name__
            return {"due": due, "sent": sent, "done": time.monotonic(), "status": status}

        results = await open_loop(args.rate, args.duration, post if args.phase == "post" else get)
    with open(args.out, "w") as out:  # noqa: ASYNC230 - once, after the load has ended
        json.dump(results, out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["post", "get"])
    parser.add_argument("--base", required=True)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--ids", type=Path, help="get: JSON list of task ids to read")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=120, help="per request, seconds")
    parser.add_argument("--out", required=True)
    asyncio.run(main(parser.parse_args()))
