"""Finding 4, SSRF through ``callback_url``: the service POSTed wherever a user pointed it (its own
loopback services, the private network, the cloud metadata endpoint) and its delivery log told
the sender what answered, which made it a port scanner.

The service here runs as shipped, without the test suite's loopback allowance: callback URLs that
show a refused target are refused when created, and any other name is checked again, on every
address it resolves to, when the webhook connects.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any

import httpx
import pytest

from domain.deployments import DeploymentAccepted
from tests.conftest import Service, free_port
from tests.security.receivers import Receiver

ServiceFactory = Callable[..., Awaitable[Service]]
REFUSED_URLS = [
    "http://0x7f000001/hook",
    "http://2130706433/hook",
    "http://0177.0.0.1/hook",
    "http://127.1/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::1]/hook",
    "http://localhost:8080/hook",
    "http://LOCALHOST./hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://10.0.0.1/hook",
    "http://192.168.1.1/hook",
    "http://0.0.0.0/hook",
]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    target = await Receiver().start()
    yield target
    await target.stop()


@pytest.fixture
async def unguarded(service_factory: ServiceFactory) -> Service:
    """The service with its default policy: nothing but public addresses may be reached."""
    return await service_factory(webhook_allow="")


def loopback_name() -> tuple[str, str]:
    """A host name of this machine that resolves only to loopback (not ``localhost``), and that
    address: a name is not refused at create time, so only the connect-time check can stop it."""
    for name in dict.fromkeys((socket.gethostname(), socket.getfqdn())):
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except OSError:
            continue
        addresses = {str(info[4][0]) for info in infos}
        if name != "localhost" and addresses and all(ip_address(a).is_loopback for a in addresses):
            return name, sorted(addresses)[0]
    pytest.skip("no host name of this machine resolves only to loopback")


async def create_with_callback(service: Service, route: str, url: str) -> httpx.Response:
    bodies: dict[str, dict[str, Any]] = {
        "/tasks": {"code": "print(1)"},
        "/deployments": {"mode": "uv"},
        "/cicd/executions/": {"pipeline": "p", "stages": [{"name": "s", "steps": ["a"]}]},
        "/render-jobs": {
            "unionid": "u",
            "oss_file_path": "a.ma",
            "render_engine": "maya",
            "total_frames": 1,
        },
    }
    return await service.http.post(route, json={**bodies[route], "callback_url": url})


async def attempts_of(service: Service, deployment_id: str, count: int) -> list[dict[str, Any]]:
    """The deployment's delivery log once it holds ``count`` attempts (at most 10 s)."""
    for _ in range(200):
        seq = await service.runtime.store.last_seq()
        log = await service.http.get(
            f"/deployments/{deployment_id}/webhooks", params={"wait_for_seq": seq}
        )
        attempts: list[dict[str, Any]] = log.json() if log.status_code == 200 else []
        if len(attempts) >= count:
            return attempts
        await asyncio.sleep(0.05)
    raise AssertionError(f"{deployment_id}: no {count} webhook attempts in 10 s: {attempts}")


async def test_callback_urls_showing_internal_targets_are_refused_when_created(
    unguarded: Service, receiver: Receiver
) -> None:
    before = await unguarded.runtime.store.last_seq()
    for url in [receiver.url(), *REFUSED_URLS]:
        for route in ("/tasks", "/deployments", "/cicd/executions/"):
            answer = await create_with_callback(unguarded, route, url)
            assert answer.status_code == 422, (route, url, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "callback_url_refused", (route, url, error)
            assert error["fields"][0]["field"] == "callback_url"
        render = await create_with_callback(unguarded, "/render-jobs", url)
        assert render.status_code == 400, (url, render.text)
        assert render.json()["code"] == 1002  # the seed's "field format error"
        assert render.json()["error"]["code"] == "callback_url_refused"
    assert await unguarded.runtime.store.last_seq() == before, "a refused command left events"
    await asyncio.sleep(0.5)
    assert receiver.connections == 0


async def test_public_and_allowed_callbacks_are_still_accepted(
    service_factory: ServiceFactory,
) -> None:
    unguarded = await service_factory(webhook_allow="")
    public = await create_with_callback(unguarded, "/tasks", "https://hooks.example.com/x")
    assert public.status_code == 202, public.text
    allowed = await service_factory(webhook_allow="10.0.0.0/8, hooks.internal")
    for url in ("http://10.1.2.3/hook", "http://hooks.internal/hook"):
        answer = await create_with_callback(allowed, "/tasks", url)
        assert answer.status_code == 202, (url, answer.text)


async def test_a_name_resolving_to_loopback_is_refused_by_policy_when_it_connects(
    unguarded: Service,
) -> None:
    name, address = loopback_name()
    listening = await Receiver(host=address).start()
    closed_port = free_port()
    try:
        to_open = await create_with_callback(unguarded, "/deployments", listening.url(name))
        to_closed = await create_with_callback(
            unguarded, "/deployments", f"http://{name}:{closed_port}/hook"
        )
        assert to_open.status_code == to_closed.status_code == 202, (to_open.text, to_closed.text)
        [open_log] = await attempts_of(unguarded, to_open.json()["deployment_id"], 1)
        [closed_log] = await attempts_of(unguarded, to_closed.json()["deployment_id"], 1)
        await asyncio.sleep(0.5)  # nothing more comes: a refusal is not retried
        assert len(await attempts_of(unguarded, to_open.json()["deployment_id"], 1)) == 1
    finally:
        await listening.stop()
    assert listening.connections == 0, "the webhook reached the loopback receiver"
    for attempt in (open_log, closed_log):
        assert attempt["delivered"] is False
        assert attempt["error"] == "refused by policy"
        assert attempt["status_code"] is None
        assert attempt["will_retry"] is False
    # An open port and a closed one read the same: the log tells the sender nothing.
    keys = ("delivered", "error", "status_code", "will_retry", "attempt")
    assert {k: open_log[k] for k in keys} == {k: closed_log[k] for k in keys}


async def test_a_callback_recorded_before_the_policy_is_refused_when_it_connects(
    unguarded: Service, receiver: Receiver
) -> None:
    """Create-time checks can be bypassed (an event recorded by an older release); the
    connection is the real guard."""
    deployment_id = "uv_20260101_000000_0ldf4c75"
    accepted = DeploymentAccepted(
        deployment_id=deployment_id,
        mode="uv",
        environment="dev",
        environment_variables=[],
        config={},
        timeout=300,
        force_rebuild=False,
        skip_health_check=False,
        callback_url=receiver.url(),
        metadata={},
        owner="admin",
        accepted_at=datetime.now(UTC),
    )
    await unguarded.runtime.store.append("deployment", deployment_id, [accepted], 0)
    [attempt] = await attempts_of(unguarded, deployment_id, 1)
    assert attempt["error"] == "refused by policy"
    assert attempt["will_retry"] is False
    assert receiver.connections == 0
