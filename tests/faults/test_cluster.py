"""The scale-out path under fault: a 3-node JetStream cluster, the event stream and the
idempotency bucket at 3 replicas, `jetflow serve` given every node in NATS_URL.

Under load one node is SIGKILLed and later started again. The service must keep accepting
commands (two nodes are still a quorum), clients resend whatever lost its answer with the same
Idempotency-Key, and at the end every acknowledged command is in the stream exactly once, the
restarted node is current again, and the projections equal a clean rebuild.

Which node dies matters: a follower of everything the tasks projector uses, or the leader of the
projector's durable consumer, whose loss the projector has to ride through as well.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from nats.js.api import ConsumerInfo, StreamInfo

from adapters.event_store import servers
from adapters.nats_auth import connect
from handlers.projector import consumer_name
from projections.tasks import TASKS
from tests.conftest import free_port
from tests.faults.cluster import (
    ROUTE_IDENTITY,
    ClusterNode,
    NatsCluster,
    node_config,
    write_route_certificates,
)
from tests.faults.harness import (
    DB_NAME,
    CommandLoad,
    ServeProcess,
    assert_exactly_once,
    checksums,
    dump_rows,
    replay_into_copy,
    scan_stream,
    sending,
)

pytestmark = pytest.mark.faults

CONCURRENCY = 50
STREAM = "FAULTS_CLUSTER"

Leaders = tuple[str, str]  # (stream leader, tasks projection consumer leader)
Victim = Callable[[NatsCluster, Leaders], ClusterNode]


async def _quiet(_: Exception) -> None:
    """The probe's server list names the dead node; failing to reach it is expected."""


async def probe(cluster: NatsCluster) -> tuple[StreamInfo, ConsumerInfo]:
    nc = await connect(
        servers(cluster.url), cluster.credentials, "fault-test-probe", error_cb=_quiet
    )
    try:
        js = nc.jetstream(timeout=5)
        return (
            await js.stream_info(STREAM),
            await js.consumer_info(STREAM, consumer_name(TASKS)),
        )
    finally:
        await nc.close()


def leaders(stream: StreamInfo, consumer: ConsumerInfo) -> Leaders:
    assert stream.cluster is not None and consumer.cluster is not None
    return str(stream.cluster.leader), str(consumer.cluster.leader)


async def until_replicas_current(cluster: NatsCluster, timeout: float = 30.0) -> StreamInfo:
    """Every follower back, current and without lag: the restarted node has caught up."""
    deadline = time.monotonic() + timeout
    while True:
        info, _ = await probe(cluster)
        peers = info.cluster.replicas if info.cluster and info.cluster.replicas else []
        if len(peers) == 2 and all(p.current and not p.offline and not p.lag for p in peers):
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"replicas not current after {timeout}s: {info.cluster}")
        await asyncio.sleep(0.2)


def a_pure_follower(cluster: NatsCluster, led: Leaders) -> ClusterNode:
    """A node leading neither the stream nor the tasks projection's consumer (with two leader
    roles among three nodes there is always one)."""
    return next(node for node in cluster.nodes if node.name not in led)


def the_projection_consumer_leader(cluster: NatsCluster, led: Leaders) -> ClusterNode:
    return cluster.node(led[1])


async def kill_one_node_under_load(
    tmp_path: Path, victim: Victim, *, commands: int, catch_up_s: float
) -> None:
    cluster = NatsCluster(tmp_path / "cluster")
    await cluster.start()
    serve = ServeProcess.for_stream(cluster.url, STREAM, tmp_path / "data")
    serve.env["JETFLOW_STREAM_REPLICAS"] = "3"  # the stream and the idempotency bucket
    assert cluster.credentials.seed_file is not None
    serve.env["JETFLOW_NATS_NKEY_SEED_FILE"] = str(cluster.credentials.seed_file)
    try:
        await serve.issue_key()
        await serve.start()
        stream, consumer = await probe(cluster)
        assert stream.config.num_replicas == 3
        assert consumer.cluster is not None and len(consumer.cluster.replicas or []) == 2
        nc = await connect(servers(cluster.url), cluster.credentials, "fault-test")
        bucket = await nc.jetstream().stream_info(f"KV_{STREAM}_idempotency")
        await nc.close()
        assert bucket.config.num_replicas == 3

        load = CommandLoad(serve.base_url, serve.api_key, commands, CONCURRENCY, prefix="cluster")
        async with sending(load, deadline_s=150) as clients:
            await load.until_answered(commands // 3)
            led = leaders(*await probe(cluster))
            node = victim(cluster, led)
            await node.kill()
            killed_at, answered = time.monotonic(), load.answered
            # The service keeps accepting commands while the node is down.
            await load.until_answered(answered + commands // 6, timeout=60)
            resumed_after = time.monotonic() - killed_at
            await cluster.restart(node)
            await clients
        print(
            f"\nkilled {node.name} (stream leader {led[0]}, tasks consumer leader {led[1]}); "
            f"{commands // 6} more answers within {resumed_after:.1f}s; "
            f"{len(load.unanswered)} keys resent, failures {dict(load.failures)}"
        )

        await serve.caught_up(timeout=catch_up_s)
        assert await serve.stop() == 0, serve.log_tail()
        info = await until_replicas_current(cluster)
        assert info.state.messages == info.state.last_seq
        scanned = await scan_stream(cluster.url, STREAM, credentials=cluster.credentials)
        once = assert_exactly_once(load, scanned)
        assert once.submitted == commands

        live = dump_rows(tmp_path / "data" / DB_NAME)
        assert len(live["tasks"]) == commands
        rebuilt = dump_rows(await replay_into_copy(serve, tmp_path / "replayed"))
        assert checksums(live) == checksums(rebuilt)
        assert live == rebuilt
    finally:
        await serve.reap()
        await cluster.stop()


async def test_kill_9_a_follower_of_a_3_node_cluster_under_load(tmp_path: Path) -> None:
    await kill_one_node_under_load(tmp_path, a_pure_follower, commands=1200, catch_up_s=60)


async def test_kill_9_the_leader_of_the_projection_consumer_under_load(tmp_path: Path) -> None:
    await kill_one_node_under_load(
        tmp_path, the_projection_consumer_leader, commands=1000, catch_up_s=20
    )


async def test_a_node_without_the_clusters_certificate_cannot_join(tmp_path: Path) -> None:
    """Routes are mutual TLS: a server with a route certificate of another CA (same subject,
    same cluster name, and trusting the cluster's CA itself) is turned away by the node it
    dials, which verifies the certificate the rogue presents."""
    cluster = NatsCluster(tmp_path / "cluster")
    await cluster.start()
    rogue = ClusterNode("jf-rogue", free_port(), free_port(), cluster.root)
    try:
        rogue_tls = cluster.root / "rogue-tls"
        write_route_certificates(rogue_tls, [rogue.name], ROUTE_IDENTITY)
        (rogue_tls / "ca.pem").write_bytes((cluster.root / "tls" / "ca.pem").read_bytes())
        first = cluster.nodes[0]
        store = cluster.root / rogue.name / "jetstream"
        rogue.config_file.write_text(
            node_config(
                rogue.name,
                rogue.client_port,
                rogue.route_port,
                store,
                [first.route_port],
                rogue_tls,
            )
        )
        await rogue.start()
        refused = "TLS route handshake error: tls: failed to verify certificate"
        for _ in range(100):
            if refused in first.log_file.read_text():
                break
            await asyncio.sleep(0.1)
        assert refused in first.log_file.read_text(), first.log_file.read_text()[-3000:]
        await cluster.until_ready(cluster.nodes)  # and the cluster itself serves on
    finally:
        await rogue.stop()
        await cluster.stop()
