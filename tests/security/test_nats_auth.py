"""Finding 1, NATS had no authentication: each attack of the review, made again on the embedded
default (`jetflow serve`, no NATS_URL) by an anonymous connection and by NATS users with too
little right, must be refused by the server or answered as the authenticated sender."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import nkeys

from adapters.credentials import new_api_key
from adapters.envelope import Metadata, encode
from adapters.nats_auth import NatsCredentials, new_seed
from domain.access import ApiKeyCreated, Role
from tests.security.conftest import Attempt, Embedded, api, ask, attempt, until_accepted


async def recorded(embedded: Embedded, task_id: str) -> list[str]:
    """The task's events as the stream holds them (the audit reads the stream, not a view)."""
    async with embedded.admin() as admin:
        history = (await until_accepted(admin, "GET", f"/audit/task/{task_id}")).json()
    return [event["type"] for event in history["events"]]


async def test_health_hides_the_nats_address_and_nats_refuses_strangers(
    embedded: Embedded,
) -> None:
    async with api(embedded.serve.base_url) as anonymous:
        health = await anonymous.get("/health")
    async with embedded.admin() as admin:
        seen_by_admin = (await until_accepted(admin, "GET", "/health")).json()
    nats = health.json()["components"]["nats"]
    assert nats == {"status": "healthy", "server": "embedded", "authenticated": True}
    assert "nats://" not in health.text
    assert seen_by_admin["components"]["nats"]["url"] == embedded.url

    stranger = embedded.seeds / "stranger.nk"
    stranger.write_bytes(new_seed()[0])  # a well-formed nkey the server was never told of
    tries = [
        await attempt(embedded.url, None),
        await attempt(embedded.url, NatsCredentials(stranger)),
    ]
    for tried in tries:
        if tried.client is not None:
            await tried.client.close()
    assert [t.client for t in tries] == [None, None]
    assert all("Authorization Violation" in str(t.refused) for t in tries)


async def test_nobody_but_the_service_appends_to_the_event_log(embedded: Embedded) -> None:
    """The review's forged admin key: an ApiKeyCreated published straight onto ev.apikey.…"""
    issued = new_api_key()
    forged = ApiKeyCreated(
        key_id=issued.key_id,
        user="mallory",
        role=Role.admin,
        digest=issued.digest,
        label="",
        created_at=datetime.now(UTC),
    )
    body = encode("apikey", issued.key_id, forged, Metadata(actor="user:mallory"))

    async def forge(credentials: NatsCredentials | None) -> Attempt:
        tried = await attempt(embedded.url, credentials)
        if tried.client is not None:
            await tried.client.publish(f"ev.apikey.{issued.key_id}.ApiKeyCreated", body)
            await tried.client.flush()
            await asyncio.sleep(0.3)
            await tried.client.close()
        await asyncio.sleep(1.5)  # far longer than the projector takes to apply an event
        async with api(embedded.serve.base_url, issued.token) as mallory:
            assert (await mallory.get("/audit/events")).status_code == 401, "forged key works"
        return tried

    anonymous = await forge(None)
    assert anonymous.client is None and "Authorization Violation" in str(anonymous.refused)
    as_worker = await forge(await embedded.nats_user("worker", "farm"))
    assert any("permissions violation for publish" in e for e in as_worker.errors)
    async with embedded.admin() as admin:
        trail = await until_accepted(admin, "GET", "/audit/events", params={"aggregate": "apikey"})
    assert issued.key_id not in trail.text


async def test_a_nats_command_acts_for_its_sender_not_for_a_header(embedded: Embedded) -> None:
    """The review's cancel of Alice's task with ``Jetflow-Actor: user:alice``."""
    async with api(embedded.serve.base_url, await embedded.api_key("operator", "alice")) as alice:
        task = (await until_accepted(alice, "POST", "/tasks", json={"code": "print(1)"})).json()
        claim = {"Jetflow-Actor": "user:alice"}
        cancel = {"task_id": task["task_id"]}
        anonymous = await attempt(embedded.url, None)
        answers = {}
        if anonymous.client is not None:
            answers["anonymous"] = await ask(anonymous.client, "cmd.task.cancel", cancel, claim)
            await anonymous.client.close()
        assert await recorded(embedded, task["task_id"]) == ["TaskSubmitted"], answers
        assert anonymous.client is None
        bob = await embedded.nats_user("producer", "bob")
        as_bob = await attempt(embedded.url, bob)
        assert as_bob.client is not None, as_bob.refused
        for subject in ("cmd.task.cancel.bob", "cmd.task.cancel.alice", "cmd.task.cancel"):
            answers[subject] = await ask(as_bob.client, subject, cancel, claim)
        submitted = await ask(
            as_bob.client, "cmd.task.submit.bob", {"code": "x", "owner": "alice"}, claim
        )
        await as_bob.client.close()
        assert await recorded(embedded, task["task_id"]) == ["TaskSubmitted"]
    own = answers["cmd.task.cancel.bob"]
    assert own is not None and own["error"]["status"] == 404  # as if alice's task did not exist
    assert answers["cmd.task.cancel.alice"] is None and answers["cmd.task.cancel"] is None
    assert sum("permissions violation for publish" in e for e in as_bob.errors) == 2
    assert submitted is not None and submitted["ok"] is True
    async with embedded.admin() as admin:
        history = (await admin.get(f"/audit/task/{submitted['task_id']}")).json()
    assert "user:alice" not in str(history) and "user:bob" in str(history)


async def test_only_workers_lease_and_nobody_reads_another_users_replies(
    embedded: Embedded,
) -> None:
    """The review's ``cmd.task.lease`` that handed another user's code to anyone."""
    async with api(embedded.serve.base_url, await embedded.api_key("operator", "carol")) as carol:
        body = {"code": "print('carol only')", "priority": 10}
        await until_accepted(carol, "POST", "/tasks", json=body)
    anonymous = await attempt(embedded.url, None)
    stolen: list[bytes] = []
    if anonymous.client is not None:
        answer = await ask(anonymous.client, "cmd.task.lease", {"node_id": "eve-node"})
        stolen.append(str(answer).encode())
        await anonymous.client.close()
    assert not [s for s in stolen if b"carol only" in s], "an anonymous lease got carol's code"
    assert anonymous.client is None
    node = await embedded.nats_user("worker", "node7")
    eve = await embedded.nats_user("producer", "eve")
    as_eve = await attempt(embedded.url, eve)
    assert as_eve.client is not None

    async def overhear(msg: object) -> None:
        stolen.append(getattr(msg, "data", b""))

    for subject in ("_INBOX_node7.>", "_INBOX.>", "cmd.>"):
        await as_eve.client.subscribe(subject, cb=overhear)
    eve_leases = [
        await ask(as_eve.client, subject, {"node_id": "eve-node"})
        for subject in ("cmd.task.lease.eve", "cmd.task.lease")
    ]
    as_node = await attempt(embedded.url, node)
    assert as_node.client is not None
    lease = await ask(as_node.client, "cmd.task.lease.node7", {"node_id": "node7"})
    await asyncio.sleep(0.5)
    await as_node.client.close()
    await as_eve.client.close()
    assert lease is not None and lease["code"] == "print('carol only')"
    assert eve_leases == [None, None]
    assert not [s for s in stolen if b"carol only" in s]
    assert sum("permissions violation for subscription" in e for e in as_eve.errors) == 3


async def test_a_revoked_nats_user_is_cut_off_at_once(embedded: Embedded) -> None:
    credentials = await embedded.nats_user("worker", "leaver")
    connected = await attempt(embedded.url, credentials)
    assert connected.client is not None
    beat = await ask(connected.client, "cmd.task.heartbeat.leaver", {"node_id": "leaver-1"})
    assert beat is not None and beat["ok"] is True
    code, _, err = await embedded.cli("nats-users", "revoke", "leaver")
    assert code == 0 and "reloaded its users" in err, err[-2000:]
    for _ in range(100):
        if connected.client.is_closed:
            break
        await asyncio.sleep(0.05)
    assert connected.client.is_closed, "the revoked user's connection stayed open"
    again = await attempt(embedded.url, credentials)
    assert again.client is None and "Authorization Violation" in str(again.refused)
    code, out, _ = await embedded.cli("nats-users", "list")
    assert "leaver" in out and "revoked" in out


async def test_render_nodes_over_nats_send_as_their_own_user(embedded: Embedded) -> None:
    farm = await embedded.nats_user("worker", "render-farm")
    assert farm.seed_file is not None
    assert nkeys.from_seed(bytearray(farm.seed_file.read_bytes().strip())) is not None
    async with embedded.admin() as admin:
        body = {
            "unionid": "dana",
            "oss_file_path": "projects/dana/wolf.ma",
            "render_engine": "maya",
            "total_frames": 6,
        }
        created = await until_accepted(admin, "POST", "/render-jobs", json=body)
        assert created.status_code == 201, created.text
        job_id = created.json()["data"]["id"]
        code, out, err = await embedded.cli(
            "render-node",
            "--nats",
            embedded.url,
            "--nats-user",
            "render-farm",
            "--nats-seed",
            str(farm.seed_file),
            "--count",
            "2",
            "--idle-exit",
            "1.5",
        )
        assert code == 0, err[-2000:]
        assert "6 frames finished" in out
        trail = await admin.get(
            "/audit/events",
            params={"aggregate": "render", "aggregate_id": job_id, "limit": 1000},
        )
    finished = [e for e in trail.json()["events"] if e["type"] == "FrameFinished"]
    assert len(finished) == 6
    assert {e["actor"] for e in finished} == {"user:render-farm"}
