"""``jetflow worker``: a real worker node. It leases tasks over HTTP, runs each one in a sandbox
(``adapters.sandbox``) under the node's own caps, and reports progress and the result.

jetflow itself never executes submitted code; only processes like this one do. The node states
its caps in every lease request, so it is never handed a task larger than it runs, and bounds
each run by them again, whatever the lease answer says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import psutil

from adapters.code_runner import RunLimits, run_python
from adapters.sandbox import Sandbox
from clients.polling import ApiCalls, Backoff, PollingClient, Stopped

log = logging.getLogger("jetflow.worker")


@dataclass(frozen=True)
class NodeCaps:
    """The most this node grants one task; the task's own request only ever narrows it."""

    cpu: float = float(len(os.sched_getaffinity(0)))
    memory_mb: int = 1024
    max_timeout_s: int = 600
    processes: int = 64
    allow_network: bool = False

    def offer(self) -> dict[str, Any]:
        """The lease request's body (``domain.tasks.NodeOffer``)."""
        return {
            "cpu": self.cpu,
            "memory": self.memory_mb,
            "timeout": self.max_timeout_s,
            "network": self.allow_network,
        }

    def limits_for(self, task: dict[str, Any]) -> RunLimits:
        return RunLimits(
            timeout_s=min(float(task["timeout"]), self.max_timeout_s),
            cpu=min(float(task["resources"]["cpu"]), self.cpu),
            memory_mb=min(int(task["resources"]["memory"]), self.memory_mb),
            processes=self.processes,
            network=bool(task["network"]) and self.allow_network,
        )


class Worker(PollingClient):
    def __init__(
        self,
        api: str,
        sandbox: Sandbox,
        node_id: str | None = None,
        *,
        caps: NodeCaps | None = None,
        api_key: str | None = None,
        poll_s: float = 1.0,
        heartbeat_s: float = 5.0,
        max_tasks: int = 0,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(api, api_key, poll_s=poll_s, backoff=backoff)
        self.sandbox = sandbox
        self.caps = caps or NodeCaps()
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}".replace(".", "-")
        self.heartbeat_s = heartbeat_s
        self.max_tasks = max_tasks

    async def run(self) -> None:
        async with self.client(timeout=30) as http:
            beats = asyncio.create_task(self._heartbeats(http))
            try:
                while not self.stopping:
                    if self.max_tasks and self.done >= self.max_tasks:
                        return
                    lease = await http.post(f"/nodes/{self.node_id}/lease", json=self.caps.offer())
                    if lease.status_code == 204:
                        await self.idle()
                        continue
                    lease.raise_for_status()
                    await self._run_task(http, lease.json())
                    self.done += 1
            finally:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beats

    async def _heartbeats(self, http: ApiCalls) -> None:
        while not self.stopping:
            memory = psutil.virtual_memory()
            body = {
                "resources": {
                    "cpu_cores": psutil.cpu_count() or 1,
                    "memory_mb": memory.total // 2**20,
                },
                "current_load": {
                    "cpu_percent": psutil.cpu_percent(interval=None),
                    "memory_percent": memory.percent,
                },
            }
            try:
                beat = await http.post(f"/nodes/{self.node_id}/heartbeat", json=body)
            except Stopped:
                return
            if beat.status_code >= 400:
                log.warning("heartbeat refused: HTTP %d", beat.status_code)
            await asyncio.sleep(self.heartbeat_s)

    async def _run_task(self, http: ApiCalls, task: dict[str, Any]) -> None:
        task_id = task["task_id"]
        log.info("running task %s (attempt %s)", task_id, task["attempt"])
        started = await http.post(
            f"/tasks/{task_id}/progress",
            json={"node_id": self.node_id, "percent": 0, "message": "started"},
        )
        if started.status_code >= 400:
            log.warning("task %s no longer ours: %s", task_id, started.text)
            return
        outcome = await run_python(task["code"], self.caps.limits_for(task), self.sandbox)
        if outcome.succeeded:
            body = {"node_id": self.node_id, "outcome": "completed", "result": outcome.stdout}
        else:
            body = {
                "node_id": self.node_id,
                "outcome": "failed",
                "result": outcome.stdout,
                "error": outcome.error or "failed",
            }
        reported = await http.post(f"/tasks/{task_id}/result", json=body)
        if reported.status_code >= 400:
            log.warning("result of %s refused: %s", task_id, reported.text)
