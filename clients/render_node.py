"""``jetflow render-node``: simulated render nodes that lease frames and report them, over NATS
(``cmd.render.*``, the default) or HTTP, with configurable timing and failure rate.

Over NATS the nodes authenticate as one worker-role NATS user (its nkey seed file): they send to
``cmd.render.<verb>.<user>`` and take replies on that user's private inbox prefix, the only
subjects the server lets it use.

It renders nothing: each "frame" is a sleep, and its output hash is the xxh3-128 of a
deterministic stand-in for the image, so a 10,000-frame job can be driven on one machine.

Over HTTP every call follows ``clients.polling.ApiCalls``: a 429, 502/503/504 or a lost
connection is waited out with backoff, forever, until SIGINT/SIGTERM stops the nodes (each after
its current frame).
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import xxhash
from nats.aio.client import Client

from adapters.event_store import servers
from adapters.nats_auth import NatsCredentials, command_subject, connect, inbox_prefix
from clients.polling import ApiCalls, Backoff, Stopped, api_client


@dataclass
class NodeStats:
    finished: int = 0
    failed: int = 0
    refused: int = 0
    leases: int = 0
    started: float = field(default_factory=time.monotonic)


class Transport(Protocol):
    async def call(self, verb: str, body: dict[str, Any]) -> dict[str, Any] | None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class NatsIdentity:
    """Where the nodes connect and as whom."""

    url: str
    user: str
    seed_file: Path

    @property
    def credentials(self) -> NatsCredentials:
        return NatsCredentials(seed_file=self.seed_file, inbox_prefix=inbox_prefix(self.user))


class NatsTransport:
    def __init__(self, nc: Client, user: str) -> None:
        self.nc = nc
        self.user = user

    @classmethod
    async def connect(cls, identity: NatsIdentity) -> NatsTransport:
        nc = await connect(servers(identity.url), identity.credentials, "jetflow-render-node")
        return cls(nc, identity.user)

    async def call(self, verb: str, body: dict[str, Any]) -> dict[str, Any] | None:
        subject = command_subject(f"cmd.render.{verb}", self.user)
        reply = await self.nc.request(subject, json.dumps(body).encode(), timeout=30)
        answer: dict[str, Any] = json.loads(reply.data)
        if verb == "lease" and answer.get("job_id") is None and "error" not in answer:
            return None
        return answer

    async def close(self) -> None:
        await self.nc.drain()


class HttpTransport:
    def __init__(
        self, api: str, api_key: str | None, stop: asyncio.Event, backoff: Backoff
    ) -> None:
        self.http = ApiCalls(api_client(api.rstrip("/"), api_key, 30), stop, backoff)

    async def call(self, verb: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if verb == "lease":
            answer = await self.http.post(f"/render-nodes/{body['node_id']}/lease")
            if answer.status_code == 204:
                return None
            data = answer.json()
            if "data" in data:
                lease = data["data"]
                return {"job_id": lease["task_id"], "frame": lease["frame_number"], **lease}
            return dict(data)
        job, frame = body.pop("job_id"), body.pop("frame")
        answer = await self.http.post(f"/render-jobs/{job}/frames/{frame}/{verb}", json=body)
        return dict(answer.json())

    async def close(self) -> None:
        await self.http.aclose()


@dataclass
class SimulatedNode:
    node_id: str
    transport: Transport
    frame_time: tuple[float, float] = (0.0, 0.0)
    failure_rate: float = 0.0
    idle_exit_s: float | None = None
    poll_s: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    stats: NodeStats = field(default_factory=NodeStats)

    async def run(self, stop: asyncio.Event) -> NodeStats:
        try:
            await self._lease_until(stop)
        except Stopped:
            pass  # a report still waiting for the API is given up: the frame times out, runs again
        return self.stats

    async def _lease_until(self, stop: asyncio.Event) -> None:
        idle_since = time.monotonic()
        while not stop.is_set():
            lease = await self.transport.call("lease", {"node_id": self.node_id})
            if lease is None or "error" in lease:
                if (
                    self.idle_exit_s is not None
                    and time.monotonic() - idle_since > self.idle_exit_s
                ):
                    break
                await asyncio.sleep(self.poll_s)
                continue
            idle_since = time.monotonic()
            self.stats.leases += 1
            await self._render(lease)

    async def _render(self, lease: dict[str, Any]) -> None:
        job_id, frame = lease["job_id"], lease["frame"]
        seconds = self.rng.uniform(*self.frame_time)
        if seconds:
            await asyncio.sleep(seconds)
        base = {"job_id": job_id, "frame": frame, "node_id": self.node_id}
        if self.rng.random() < self.failure_rate:
            answer = await self.transport.call("fail", {**base, "error": "simulated crash"})
            self.stats.failed += 1
        else:
            image = f"{job_id}/{frame}/{lease['attempt']}".encode()
            answer = await self.transport.call(
                "finish",
                {
                    **base,
                    "output_path": f"renders/{job_id}/frame.{frame:05d}.exr",
                    "output_size": len(image) * 1024,
                    "output_hash": xxhash.xxh3_128_hexdigest(image),
                    "render_time": round(seconds, 6),
                },
            )
            self.stats.finished += 1
        if answer is not None and "error" in answer:
            self.stats.refused += 1


async def run_nodes(
    *,
    count: int,
    nats_identity: NatsIdentity | None,
    api: str | None,
    api_key: str | None = None,
    frame_time: tuple[float, float],
    failure_rate: float,
    idle_exit_s: float | None,
    seed: int | None,
    prefix: str = "render-node",
    backoff: Backoff | None = None,
) -> list[NodeStats]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    transports: list[Transport] = []
    for _ in range(count):
        if nats_identity is not None:
            transports.append(await NatsTransport.connect(nats_identity))
        else:
            assert api is not None
            transports.append(HttpTransport(api, api_key, stop, backoff or Backoff()))
    rng = random.Random(seed)
    nodes = [
        SimulatedNode(
            node_id=f"{prefix}-{i + 1}",
            transport=transport,
            frame_time=frame_time,
            failure_rate=failure_rate,
            idle_exit_s=idle_exit_s,
            rng=random.Random(rng.random()),
        )
        for i, transport in enumerate(transports)
    ]
    try:
        return list(await asyncio.gather(*(node.run(stop) for node in nodes)))
    finally:
        for transport in transports:
            await transport.close()
