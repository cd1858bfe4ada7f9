"""kill -9 the nats-server under load and start it again on the same port and store.

The service (`jetflow serve`, a child process) and the clients must ride through the outage:
the service reconnects, clients resend unanswered commands with the same Idempotency-Key, and a
command whose append reached the store before the crash is recognised on resend (the answer
remembered in the idempotency bucket, or ``Nats-Msg-Id`` inside the stream's 2-minute duplicate
window). The session's nats-server is never touched: this test owns its broker.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest

from adapters.nats_server import EmbeddedNatsServer
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

COMMANDS = 2000
CONCURRENCY = 50
STREAM = "FAULTS_NATS"


async def test_kill_9_the_nats_server_mid_load_then_restart_it(tmp_path: Path) -> None:
    broker = EmbeddedNatsServer(store_dir=tmp_path / "nats")
    url = await broker.start()
    serve = ServeProcess.for_stream(url, STREAM, tmp_path / "data")
    try:
        await serve.issue_key()
        await serve.start()
        load = CommandLoad(serve.base_url, serve.api_key, COMMANDS, CONCURRENCY, prefix="broker")
        async with sending(load, deadline_s=150) as clients:
            await load.until_answered(COMMANDS // 3)
            broker.kill()
            killed_at, answered_at_kill = time.monotonic(), load.answered
            await asyncio.sleep(1.0)
            assert await broker.start() == url  # same port: the service's URL is still right
            restarted_at = time.monotonic()
            await clients
        assert load.unanswered, "no command lost its answer: the broker died unnoticed"
        assert load.answered_between(restarted_at, time.monotonic()) > 0
        print(
            f"\nbroker killed at {answered_at_kill} answers, down "
            f"{restarted_at - killed_at:.1f}s; {len(load.unanswered)} keys resent, "
            f"failures {dict(load.failures)}"
        )

        await serve.caught_up()
        assert await serve.stop() == 0, serve.log_tail()
        once = assert_exactly_once(load, await scan_stream(url, STREAM))
        assert once.submitted == COMMANDS

        nc = await nats.connect(url)
        info = await nc.jetstream().stream_info(STREAM)
        await nc.close()
        assert info.state.messages == info.state.last_seq, "a message went missing in the store"

        live = dump_rows(tmp_path / "data" / DB_NAME)
        assert len(live["tasks"]) == COMMANDS
        rebuilt = dump_rows(await replay_into_copy(serve, tmp_path / "replayed"))
        assert checksums(live) == checksums(rebuilt)
        assert live == rebuilt
    finally:
        await serve.reap()
        await broker.stop()
