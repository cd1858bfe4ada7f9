"""Finding 7, the service's side: requests naming a victim's key id with a wrong secret filled the
victim's rate-limit bucket, so the victim's own worker got 429 (and crashed on it).

Now a bucket counts only requests whose credential verified; failed authentications count
against the client address, which answers 429 ``auth_failures_exceeded`` once it failed too
often; and the client address is the socket peer unless ``JETFLOW_TRUSTED_PROXIES`` names it.

The attacked system is `jetflow serve` itself, as a child process: the address rule must hold
with the uvicorn configuration it runs, and its environment tells uvicorn to believe
``X-Forwarded-For`` from every peer (``FORWARDED_ALLOW_IPS=*``), which jetflow must not let it
do. The clients bind distinct loopback addresses (127.0.0.0/8 is all local on Linux), so each
test is a different set of client addresses on the one service this module starts.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.nats_server import EmbeddedNatsServer
from api.settings import Settings
from tests.conftest import delete_stream, free_port
from tests.faults.harness import ServeProcess, service_env
from tests.security.conftest import embedded_env, jetflow

FAILURES = 30  # JETFLOW_AUTH_FAILURES_PER_MINUTE
PER_KEY = 150  # JETFLOW_RATE_LIMIT_PER_MINUTE: fewer than the attack sends
TRUSTED_PROXY = "127.0.0.2"


@pytest.fixture(scope="module")
async def served(
    nats_server: EmbeddedNatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServeProcess]:
    """`jetflow serve` on the session's nats-server, with a low failure limit, one trusted
    proxy, and an admin key (the victim's) made by `jetflow keys create`."""
    root = tmp_path_factory.mktemp("lockout")
    stream = f"L{uuid.uuid4().hex[:10].upper()}"
    env = service_env(
        nats_server.url,
        stream,
        root / "data",
        free_port(),
        JETFLOW_AUTH_FAILURES_PER_MINUTE=str(FAILURES),
        JETFLOW_TRUSTED_PROXIES=TRUSTED_PROXY,
        FORWARDED_ALLOW_IPS="*",
    )
    env["JETFLOW_RATE_LIMIT_PER_MINUTE"] = str(PER_KEY)
    serve = ServeProcess(env, root / "serve.log")
    await serve.issue_key()
    await serve.start()
    try:
        yield serve
    finally:
        await serve.stop()
        await serve.reap()
        await delete_stream(Settings(stream=stream), nats_server.url)


def from_address(served: ServeProcess, host: str) -> httpx.AsyncClient:
    """A client whose connections come from ``host``, as a machine of its own would."""
    return httpx.AsyncClient(
        base_url=f"{served.base_url}/api/v1",
        transport=httpx.AsyncHTTPTransport(local_address=host),
        timeout=10,
    )


def wrong_secret(key: str) -> str:
    """The victim's key id (it is no secret: logs and listings show it) with a guessed secret."""
    key_id = key.removeprefix("jfk_").partition("_")[0]
    return f"jfk_{key_id}_{secrets.token_urlsafe(32)}"


def unknown_key() -> str:
    return f"jfk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


def key(token: str, forwarded_for: str | None = None) -> dict[str, str]:
    headers = {"X-API-Key": token}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return headers


async def test_guessing_a_victims_secret_locks_out_the_guesser_not_the_victim(
    served: ServeProcess,
) -> None:
    assert served.api_key is not None
    victim_key = served.api_key
    async with (
        from_address(served, "127.0.0.3") as attacker,
        from_address(served, "127.0.0.4") as victim,
        from_address(served, "127.0.0.9") as bystander,
    ):
        before = await victim.get("/tasks", headers=key(victim_key))
        assert before.status_code == 200, before.text
        remaining = int(before.headers["X-RateLimit-Remaining"])

        statuses = [
            (await attacker.get("/tasks", headers=key(wrong_secret(victim_key)))).status_code
            for _ in range(PER_KEY + 60)
        ]
        assert statuses == [401] * FAILURES + [429] * (PER_KEY + 60 - FAILURES)

        locked = await attacker.get("/tasks", headers=key(wrong_secret(victim_key)))
        assert locked.status_code == 429
        assert locked.json()["error"]["code"] == "auth_failures_exceeded"
        assert 0 < int(locked.headers["Retry-After"]) <= 60
        # Locked out for whatever it presents, a right key included: guessing gains nothing.
        right_key = await attacker.get("/tasks", headers=key(victim_key))
        assert right_key.status_code == 429
        assert right_key.json()["error"]["code"] == "auth_failures_exceeded"
        assert (await attacker.get("/health")).status_code == 200  # anonymous stays anonymous

        after = await victim.get("/tasks", headers=key(victim_key))
        assert after.status_code == 200, after.text
        assert int(after.headers["X-RateLimit-Remaining"]) == remaining - 1
        # Another address that gets a secret wrong is told so, not locked out with the attacker.
        mistaken = await bystander.get("/tasks", headers=key(wrong_secret(victim_key)))
        assert mistaken.status_code == 401
        assert mistaken.json()["error"]["code"] == "unauthorized"


async def test_x_forwarded_for_from_an_untrusted_peer_changes_nothing(
    served: ServeProcess,
) -> None:
    """A fresh spoofed address per guess: all of them are counted against the real peer."""
    async with from_address(served, "127.0.0.5") as spoofer:
        statuses = [
            (await spoofer.get("/tasks", headers=key(unknown_key(), f"198.51.100.{n}"))).status_code
            for n in range(FAILURES + 5)
        ]
        assert statuses == [401] * FAILURES + [429] * 5
        assert served.api_key is not None
        unspoofed = await spoofer.get("/tasks", headers=key(served.api_key))
        assert unspoofed.status_code == 429
        assert unspoofed.json()["error"]["code"] == "auth_failures_exceeded"


async def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(
    served: ServeProcess,
) -> None:
    """Behind the proxy the client is the right-most address the proxy did not add itself:
    what the client wrote to the left of it, and trusted hops to the right, change nothing."""
    assert served.api_key is not None
    async with from_address(served, TRUSTED_PROXY) as proxy:
        for n in range(FAILURES):
            chain = f"10.9.9.{n}, 203.0.113.7" if n % 2 else f"203.0.113.7, {TRUSTED_PROXY}"
            refused = await proxy.get("/tasks", headers=key(unknown_key(), chain))
            assert refused.status_code == 401, (n, refused.text)
        locked = await proxy.get("/tasks", headers=key(served.api_key, "10.1.1.1, 203.0.113.7"))
        assert locked.status_code == 429
        assert locked.json()["error"]["code"] == "auth_failures_exceeded"

        # Another client behind the same proxy, and the proxy's own requests, are not locked.
        other = await proxy.get("/tasks", headers=key(unknown_key(), "203.0.113.8"))
        assert other.status_code == 401
        assert (
            await proxy.get("/tasks", headers=key(served.api_key, "203.0.113.8"))
        ).status_code == 200
        assert (await proxy.get("/tasks", headers=key(served.api_key))).status_code == 200


async def test_a_trusted_proxy_setting_that_is_no_address_stops_the_service(
    tmp_path: Path,
) -> None:
    env = {**embedded_env(tmp_path), "JETFLOW_TRUSTED_PROXIES": "10.0.0.0/8, 10.0.0.0/33"}
    code, _, err = await jetflow(env, "serve", timeout=20)
    assert code != 0
    assert "JETFLOW_TRUSTED_PROXIES: '10.0.0.0/33' is neither an address nor a network" in err
    assert "Traceback" not in err
