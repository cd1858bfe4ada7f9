"""A 3-node JetStream cluster on loopback, one nats-server process per node, each of which a test
can SIGKILL and start again on the same ports and store.

The generated file is the scale-out configuration documented in nats.conf, with loopback
addresses and free ports instead of host names: every node lists every node's route (its own
included; nats-server ignores the route to itself), and store_dir lives in the file because a
clustered node is started with ``-c`` alone. As documented, routes are mutual TLS with a CA of
the cluster's own (made here with ``cryptography``) and authorised by the certificate's subject
(``verify_and_map``), and clients must present an nkey from the users list jetflow generates.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import signal
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nats.errors import Error as NatsError

from adapters.nats_auth import AUTH_DIR_NAME, NatsAuthDir, NatsCredentials, connect
from adapters.nats_server import find_nats_server_binary
from tests.conftest import free_port

CLUSTER_NAME = "jetflow-faults"
ROUTE_IDENTITY = "jetflow-route"  # the subject every route certificate carries


def node_config(
    name: str, client_port: int, route_port: int, store: Path, routes: list[int], tls: Path
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
include "{AUTH_DIR_NAME}/authorization.conf"
cluster {{
  name: {CLUSTER_NAME}
  listen: 127.0.0.1:{route_port}
  tls {{
    cert_file: "{tls / f"{name}.pem"}"
    key_file: "{tls / f"{name}-key.pem"}"
    ca_file: "{tls / "ca.pem"}"
    verify_and_map: true
    timeout: 5
  }}
  authorization {{
    user: "CN={ROUTE_IDENTITY}"
    timeout: 5
  }}
  routes: [
{route_urls}
  ]
}}
"""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_route_certificates(folder: Path, nodes: list[str], identity: str) -> None:
    """A CA of the cluster's own and, per node, a certificate for both ends of a route (server
    and client auth, 127.0.0.1) whose subject is the route identity the nodes authorise."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("jetflow test cluster CA"))
        .issuer_name(_name("jetflow test cluster CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for node in nodes:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(identity))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        (folder / f"{node}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file = folder / f"{node}-key.pem"
        key_file.write_bytes(_pem_key(key))
        key_file.chmod(0o600)


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
        # The users list every node includes, as `jetflow nats-users` writes it; the service
        # is given its seed file (JETFLOW_NATS_NKEY_SEED_FILE) as on any external server.
        self.auth = NatsAuthDir(root / AUTH_DIR_NAME)

    @property
    def credentials(self) -> NatsCredentials:
        return self.auth.service_credentials()

    @property
    def url(self) -> str:
        """The form NATS_URL takes for a cluster: every node, comma-separated."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def write_configs(self) -> None:
        routes = [node.route_port for node in self.nodes]
        tls = self.root / "tls"
        write_route_certificates(tls, [node.name for node in self.nodes], ROUTE_IDENTITY)
        self.auth.write_authorization()
        for node in self.nodes:
            store = self.root / node.name / "jetstream"
            store.mkdir(parents=True, exist_ok=True)
            node.config_file.write_text(
                node_config(node.name, node.client_port, node.route_port, store, routes, tls)
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
            while not await _jetstream_answers(node.url, self.credentials):
                assert node.process is not None and node.process.returncode is None, (
                    node.log_file.read_text()[-3000:]
                )
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()


async def _quiet(_: Exception) -> None:
    """A node that is still starting refuses connections; that is what the poll is for."""


async def _jetstream_answers(url: str, credentials: NatsCredentials) -> bool:
    try:
        nc = await connect(
            [url],
            credentials,
            "cluster-probe",
            connect_timeout=1,
            allow_reconnect=False,
            error_cb=_quiet,
        )
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
