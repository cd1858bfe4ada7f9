"""A 3-node JetStream cluster on loopback, one nats-server process per node, each of which a test
can SIGKILL and start again on the same ports and store.

The generated file is the scale-out configuration documented in nats.conf, with loopback
addresses and free ports instead of host names: every node lists every node's route (its own
included; nats-server ignores the route to itself), and store_dir lives in the file because a
clustered node is started with ``-c`` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.errors import Error as NatsError

from adapters.nats_server import find_nats_server_binary
from tests.conftest import free_port

CLUSTER_NAME = "jetflow-faults"


def node_config(
    name: str, client_port: int, route_port: int, store: Path, routes: list[int]
) -> str:
    route_urls = "\n".join(f"    nats-route://127.0.0.1:{port}" for port in routes)
    return f"""server_name: {name}
listen: 127.0.0.1:{client_port}
max_payload: 8MB
jetstream {{
  store_dir: "{store}"
  max_memory_store: 256MB
  max_file_store: 2GB
}}
cluster {{
  name: {CLUSTER_NAME}
  listen: 127.0.0.1:{route_port}
  routes: [
{route_urls}
  ]
}}
"""


@dataclass
class ClusterNode:
    name: str
    client_port: int
    route_port: int
    root: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def config_file(self) -> Path:
        return self.root / f"{self.name}.conf"

    @property
    def log_file(self) -> Path:
        return self.root / f"{self.name}.log"

    async def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                str(find_nats_server_binary()),
                "-c",
                str(self.config_file),
                "-l",
                str(self.log_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    async def kill(self) -> None:
        assert self.process is not None and self.process.returncode is None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


class NatsCluster:
    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        self.nodes = [
            ClusterNode(f"jf-n{i + 1}", free_port(), free_port(), root) for i in range(size)
        ]

    @property
    def url(self) -> str:
        """The form NATS_URL takes for a cluster: every node, comma-separated."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def write_configs(self) -> None:
        routes = [node.route_port for node in self.nodes]
        for node in self.nodes:
            store = self.root / node.name / "jetstream"
            store.mkdir(parents=True, exist_ok=True)
            node.config_file.write_text(
                node_config(node.name, node.client_port, node.route_port, store, routes)
            )

    async def start(self, timeout: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_configs()
        for node in self.nodes:
            await node.start()
        await asyncio.wait_for(self.until_ready(self.nodes), timeout)

    async def restart(self, node: ClusterNode, timeout: float = 30.0) -> None:
        await node.start()
        await asyncio.wait_for(self.until_ready([node]), timeout)

    async def until_ready(self, nodes: list[ClusterNode]) -> None:
        """JetStream answers on every given node: the cluster has a meta leader they follow."""
        for node in nodes:
            while not await _jetstream_answers(node.url):
                assert node.process is not None and node.process.returncode is None, (
                    node.log_file.read_text()[-3000:]
                )
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()


async def _quiet(_: Exception) -> None:
    """A node that is still starting refuses connections; that is what the poll is for."""


async def _jetstream_answers(url: str) -> bool:
    try:
        nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False, error_cb=_quiet)
    except (NatsError, OSError, TimeoutError):
        return False
    try:
        await nc.jetstream(timeout=1).account_info()
        return True
    except (NatsError, TimeoutError):
        return False
    finally:
        with contextlib.suppress(NatsError):
            await nc.close()
