"""Finding 8 and the append-only log, on the embedded default: a `kill -9` of `jetflow serve`
under load takes its nats-server along, a restart loses no acknowledged command, a second
service on the same data folder refuses to start, and no identity can delete or purge the event
log (the review's revoked key that worked again after `jetflow replay`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from adapters.nats_auth import AUTH_DIR_NAME, SERVICE_SEED, NatsCredentials
from tests.conftest import free_port
from tests.faults.harness import CommandLoad, assert_exactly_once, scan_stream, sending, when
from tests.security.conftest import ask, attempt, jetflow, start_embedded, until_accepted


@dataclass
class Attack:
    """What a delete and a purge of the stream got: refused at connect, or each answer (None
    when the server dropped the request), and the errors the server sent."""

    refused: str | None
    deleted: dict[str, Any] | None
    purged: dict[str, Any] | None
    errors: list[str]


def nats_servers_on(store: Path) -> list[psutil.Process]:
    """Every live nats-server process serving ``store``, whoever started it."""
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        if "nats-server" not in (process.info["name"] or ""):
            continue
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if str(store.resolve()) in (process.info["cmdline"] or []):
            found.append(process)
    return found


async def until_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """The pids still alive (zombies count as gone) after waiting up to ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                continue
        if not alive or loop.time() > deadline:
            return alive
        await asyncio.sleep(0.1)


IN_FLIGHT = 1000


async def test_kill_9_of_serve_under_load_takes_its_nats_server_along_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """The fault suite's in-flight kill on the embedded default: clients keep resending with
    their Idempotency-Keys through the crash, and every acknowledged command is in the log once."""
    # One admin key sends them all, faster than the default 600 a minute.
    embedded = await start_embedded(tmp_path, JETFLOW_RATE_LIMIT_PER_MINUTE="100000000")
    store = embedded.data_dir / "nats"
    try:
        load = CommandLoad(
            embedded.serve.base_url, await embedded.api_key("admin", "faults"), IN_FLIGHT
        )
        async with sending(load) as clients:
            await load.until_answered(IN_FLIGHT // 3)
            await when(lambda: load.in_flight >= load.concurrency - 5, 5, "requests out")
            [server] = nats_servers_on(store)
            await embedded.serve.kill()
            assert await until_gone([server.pid]) == [], "the nats-server outlived kill -9 of serve"
            assert load.unanswered, "no request lost its answer: the kill hit nothing in flight"

            await embedded.serve.start()
            [restarted] = nats_servers_on(store)
            assert restarted.pid != server.pid
            await clients

        service = NatsCredentials(embedded.data_dir / AUTH_DIR_NAME / SERVICE_SEED)
        once = assert_exactly_once(
            load, await scan_stream(embedded.url, "JETFLOW", "ev.task.>", credentials=service)
        )
        assert once.submitted == IN_FLIGHT
        async with embedded.admin() as admin:
            last = max(answer.seq for answer in load.answers.values())
            listed = await admin.get("/tasks", params={"wait_for_seq": last, "page_size": 1})
            assert listed.status_code == 200, listed.text
            assert listed.json()["total"] == IN_FLIGHT
            stream = (await admin.get("/health")).json()["components"]["stream"]
        assert stream["last_seq"] == stream["messages"]
    finally:
        await embedded.serve.stop()
        await embedded.serve.reap()


async def test_a_second_serve_on_the_same_data_folder_refuses_to_start(tmp_path: Path) -> None:
    embedded = await start_embedded(tmp_path)
    store = embedded.data_dir / "nats"
    try:
        second = {**embedded.env, "JETFLOW_PORT": str(free_port())}
        code, _, err = await jetflow(second, "serve", timeout=60)
        assert code == 1, err[-2000:]
        assert f"the data folder {embedded.data_dir} is in use by process" in err
        assert len(nats_servers_on(store)) == 1
        # Tools that join the running service still work: they join, they do not lock.
        assert (await embedded.api_key("viewer", "still-works")).startswith("jfk_")
        async with embedded.admin() as admin:
            assert (await admin.get("/health")).status_code == 200
    finally:
        await embedded.serve.stop()
        await embedded.serve.reap()


async def test_no_identity_can_delete_or_purge_the_event_log(tmp_path: Path) -> None:
    embedded = await start_embedded(tmp_path)
    try:
        victim = await embedded.api_key("viewer", "victim")
        key_id = victim.split("_")[1]
        async with embedded.api_key_client(victim) as http:
            assert (await until_accepted(http, "GET", "/tasks")).status_code == 200
        code, _, err = await embedded.cli("keys", "revoke", key_id)
        assert code == 0, err[-2000:]
        async with embedded.admin() as admin:
            trail = await until_accepted(
                admin,
                "GET",
                "/audit/events",
                params={"aggregate": "apikey", "aggregate_id": key_id},
            )
        [revoked] = [e["seq"] for e in trail.json()["events"] if e["type"] == "ApiKeyRevoked"]

        async def attack(credentials: NatsCredentials | None) -> Attack:
            tried = await attempt(embedded.url, credentials)
            if tried.client is None:
                return Attack(tried.refused, None, None, tried.errors)
            deleted = await ask(tried.client, "$JS.API.STREAM.MSG.DELETE.JETFLOW", {"seq": revoked})
            purged = await ask(tried.client, "$JS.API.STREAM.PURGE.JETFLOW", {})
            await tried.client.close()
            return Attack(None, deleted, purged, tried.errors)

        anonymous = await attack(None)
        assert "Authorization Violation" in str(anonymous.refused), anonymous
        worker = await attack(await embedded.nats_user("worker", "w1"))
        assert (worker.deleted, worker.purged) == (None, None)
        assert sum("permissions violation for publish" in e for e in worker.errors) == 2
        # Even the service's own identity, read from the data folder, cannot.
        service = await attack(NatsCredentials(embedded.data_dir / AUTH_DIR_NAME / SERVICE_SEED))
        assert service.deleted is not None and service.deleted["error"]["err_code"] == 10057
        assert service.purged is not None and service.purged["error"]["err_code"] == 10110

        assert await embedded.serve.stop() == 0
        code, _, err = await embedded.cli("replay")
        assert code == 0, err[-2000:]
        await embedded.serve.start()
        async with embedded.api_key_client(victim) as http:
            assert (await http.get("/tasks")).status_code == 401
    finally:
        await embedded.serve.stop()
        await embedded.serve.reap()
