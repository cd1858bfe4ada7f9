"""kill -9 `jetflow serve` under load, start it again on the same stream and database, and prove
that every acknowledged command is in the stream exactly once and that the projections equal a
clean `jetflow replay` of that stream.

The service runs as a real child process against the session's nats-server (its own stream and
data folder), so SIGKILL takes the HTTP server, the command path and the projectors down at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from api.settings import Settings
from handlers.projector import consumer_name
from projections.tasks import TASKS, tasks
from tests.faults.harness import (
    DB_NAME,
    CommandLoad,
    ExactlyOnce,
    ServeProcess,
    assert_exactly_once,
    checkpoint_of,
    checksums,
    dump_rows,
    replay_into_copy,
    scan_stream,
    sending,
    when,
)

pytestmark = pytest.mark.faults

COMMANDS = 2000
CONCURRENCY = 50


async def projector_position(settings: Settings, db: Path) -> tuple[int, int, int]:
    """Stream's last sequence, the tasks projection's SQL checkpoint, and how many deliveries
    its durable consumer had handed out without an acknowledgement."""
    nc = await nats.connect(settings.nats_url or "")
    try:
        js = nc.jetstream()
        last = (await js.stream_info(settings.stream)).state.last_seq
        consumer = await js.consumer_info(settings.stream, consumer_name(TASKS))
    finally:
        await nc.close()
    return int(last), checkpoint_of(db, TASKS.name), int(consumer.num_ack_pending or 0)


async def prove_recovered(
    serve: ServeProcess, load: CommandLoad, settings: Settings, tmp: Path
) -> ExactlyOnce:
    """The common ending: projections catch up, the stream holds each key once, and the live rows
    equal a rebuild from sequence 1."""
    await serve.caught_up()
    assert await serve.stop() == 0, serve.log_tail()

    messages = await scan_stream(settings.nats_url or "", settings.stream)
    once = assert_exactly_once(load, messages)
    assert once.submitted == COMMANDS

    live = dump_rows(Path(serve.env["JETFLOW_DATA_DIR"]) / DB_NAME)
    assert len(live["tasks"]) == COMMANDS
    status = list(tasks.columns.keys()).index("status")
    assert {row[status] for row in live["tasks"]} == {"pending"}
    rebuilt = dump_rows(await replay_into_copy(serve, tmp / "replayed"))
    assert checksums(live) == checksums(rebuilt)
    assert live == rebuilt
    return once


@pytest.fixture
async def serve(settings: Settings, tmp_path: Path) -> AsyncIterator[ServeProcess]:
    """`jetflow serve` on the session's nats-server, its own stream and data folder, and an
    admin key for the clients; killed at the end if a failed test left it running."""
    process = ServeProcess.for_stream(settings.nats_url or "", settings.stream, tmp_path / "data")
    await process.issue_key()
    yield process
    await process.reap()


async def test_kill_9_while_the_projector_applies_then_restart(
    serve: ServeProcess, settings: Settings, tmp_path: Path
) -> None:
    # Small projection batches keep a batch in flight most of the time.
    serve.env["JETFLOW_PROJECTION_BATCH"] = "50"
    db = tmp_path / "data" / DB_NAME
    await serve.start()
    load = CommandLoad(serve.base_url, serve.api_key, COMMANDS, CONCURRENCY, prefix="projector")
    async with sending(load) as clients:
        await load.until_answered(COMMANDS // 3)
        # Kill at a moment the projector has events to apply that SQL does not hold yet: many
        # if that comes soon, at least one otherwise.
        started = time.monotonic()
        while True:
            last, applied, _ = await projector_position(settings, db)
            if last - applied >= (20 if time.monotonic() - started < 3 else 1):
                break
            assert not clients.done(), "the load ended before the projector was ever behind"
        await serve.kill()
        answered_at_kill = load.answered
        last, applied, unacked = await projector_position(settings, db)
        assert 0 < applied < last, "the projector was not behind when it died: nothing proved"
        print(
            f"\nkilled at {answered_at_kill} answers: stream at {last}, tasks checkpoint "
            f"{applied}, {unacked} deliveries unacknowledged"
        )

        await serve.start()  # same port, same stream, same SQLite file
        await clients
    once = await prove_recovered(serve, load, settings, tmp_path)
    print(f"{once.submitted} submissions once each; {once.retried_keys} keys were resent")


async def test_kill_9_with_requests_in_flight_then_clients_resend(
    serve: ServeProcess, settings: Settings, tmp_path: Path
) -> None:
    await serve.start()
    load = CommandLoad(serve.base_url, serve.api_key, COMMANDS, CONCURRENCY, prefix="inflight")
    async with sending(load) as clients:
        await load.until_answered(COMMANDS // 3)
        await when(lambda: load.in_flight >= CONCURRENCY - 5, 5, "a full set of requests out")
        await serve.kill()
        nc = await nats.connect(settings.nats_url or "")
        last_at_kill = (await nc.jetstream().stream_info(settings.stream)).state.last_seq
        await nc.close()
        await asyncio.sleep(0.5)  # the clients see refused connections and keep their keys
        assert load.unanswered, "no request lost its answer: the kill hit nothing in flight"

        await serve.start()
        await clients
    once = await prove_recovered(serve, load, settings, tmp_path)
    # Resent keys whose first send had already been appended before the crash: the resend was
    # answered with the first append's task id and sequence, and appended nothing.
    resent_after_append = [key for key in load.unanswered if load.answers[key].seq <= last_at_kill]
    print(
        f"\n{len(load.unanswered)} keys lost an answer, {len(resent_after_append)} of them had "
        f"been appended before the kill; {once.submitted} submissions once each"
    )
