"""Finding 8 and the append-only log, on the embedded default: a `kill -9` of `jetflow serve`
takes its nats-server along, a restart loses no acknowledged event, a second service on the
same data folder refuses to start, and no identity can delete or purge the event log (the
review's revoked key that worked again after `jetflow replay`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from adapters.nats_auth import AUTH_DIR_NAME, SERVICE_SEED, NatsCredentials
from tests.conftest import free_port
from tests.security.conftest import Embedded, ask, attempt, jetflow, start_embedded, until_accepted


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


async def submit(embedded: Embedded, count: int) -> list[tuple[str, int]]:
    acknowledged = []
    async with embedded.admin() as admin:
        for i in range(count):
            answer = await until_accepted(admin, "POST", "/tasks", json={"code": f"print({i})"})
            assert answer.status_code == 202, answer.text
            acknowledged.append((answer.json()["task_id"], answer.json()["seq"]))
    return acknowledged


async def test_kill_9_of_serve_takes_its_nats_server_along_and_a_restart_loses_nothing(
    tmp_path: Path,
) -> None:
    embedded = await start_embedded(tmp_path)
    store = embedded.data_dir / "nats"
    try:
        before = await submit(embedded, 20)
        [server] = nats_servers_on(store)
        await embedded.serve.kill()
        assert await until_gone([server.pid]) == [], "the nats-server outlived kill -9 of serve"

        await embedded.serve.start()
        [restarted] = nats_servers_on(store)
        assert restarted.pid != server.pid
        after = await submit(embedded, 5)
        async with embedded.admin() as admin:
            for task_id, seq in before:
                kept = await admin.get(f"/tasks/{task_id}", params={"wait_for_seq": seq})
                assert kept.status_code == 200, (task_id, seq, kept.text)
            stream = (await admin.get("/health")).json()["components"]["stream"]
        acknowledged = [seq for _, seq in before + after]
        assert len(set(acknowledged)) == len(acknowledged), "a sequence was acknowledged twice"
        assert min(seq for _, seq in after) > max(seq for _, seq in before)
        assert stream["last_seq"] == stream["messages"] == max(acknowledged)
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
