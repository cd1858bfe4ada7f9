"""Finding 12: live feeds outlived revoked credentials and had no cap.

A revoked key's open SSE streams and WebSockets kept streaming, one key could hold hundreds of
WebSockets (each a JetStream consumer), and a WebSocket's consumer stayed after its client left.
Now a feed ends within the key cache time of a revocation (a JWT's at its ``exp``), a credential
and the service hold at most so many feeds at once (429 / close code 4429), and a client's
consumer goes as soon as the client does. Every attack here runs against the served system:
uvicorn on real HTTP and WebSocket, a nats-server of this module's own. Keys are revoked the
way `jetflow keys revoke` does it (``handlers.access.revoke_api_key``; there is no HTTP route).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from httpx_sse import ServerSentEvent, aconnect_sse
from nats.js.api import ConsumerInfo
from websockets.frames import Close

from adapters.nats_server import EmbeddedNatsServer
from api.settings import Settings
from handlers.access import revoke_api_key
from tests.conftest import Service, start_service

CACHE_S = 0.5
PER_KEY = 3
TOTAL = 6
MARGIN_S = 1.0
JWT_SECRET = "live-feed-test-secret-of-32-bytes!!"


@pytest.fixture(scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    """One service for the module: a short key cache time and small caps."""
    server = EmbeddedNatsServer(store_dir=tmp_path_factory.mktemp("live-nats"))
    await server.start()
    settings = Settings(
        nats_url=server.url,
        data_dir=tmp_path_factory.mktemp("live"),
        stream=f"L{uuid.uuid4().hex[:10].upper()}",
        rate_limit_per_minute=100_000,
        key_cache_s=CACHE_S,
        live_feeds_per_key=PER_KEY,
        live_feeds_total=TOTAL,
        jwt_key=JWT_SECRET,
    )
    service = await start_service(settings, timers=False)
    try:
        yield service
    finally:
        await service.stop()
        await server.stop()


async def operator(service: Service, user: str) -> tuple[str, str]:
    """An operator's key and a task of its own, which its feeds can be opened on."""
    key = await service.key("operator", user)
    answer = await service.http.post(
        "/tasks", json={"code": "print(1)"}, headers={"X-API-Key": key}
    )
    assert answer.status_code == 202, answer.text
    return key, str(answer.json()["task_id"])


def ws_url(service: Service, token: str, task_id: str) -> str:
    base = service.base_url.replace("http", "ws", 1)
    return f"{base}/api/v1/events/ws?aggregate=task&aggregate_id={task_id}&from_seq=1&token={token}"


@contextlib.asynccontextmanager
async def websocket(
    service: Service, token: str, task_id: str
) -> AsyncIterator[websockets.ClientConnection]:
    """A WebSocket on the task's events, once the service has admitted it: it has delivered
    the task's first event."""
    async with websockets.connect(ws_url(service, token, task_id)) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["type"] == "TaskSubmitted"
        yield ws


@contextlib.asynccontextmanager
async def sse(
    service: Service, headers: dict[str, str], task_id: str
) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
    """An SSE stream on the task's events, once it has delivered the task's first event: the
    rest of its messages."""
    async with (
        httpx.AsyncClient(base_url=service.base_url, timeout=10, headers=headers) as client,
        aconnect_sse(
            client,
            "GET",
            "/api/v1/events/stream",
            params={"aggregate": "task", "aggregate_id": task_id, "from_seq": 1},
        ) as source,
    ):
        assert source.response.status_code == 200, await source.response.aread()
        messages = source.aiter_sse()
        first = await asyncio.wait_for(anext(messages), 5)
        assert first.event == "TaskSubmitted"
        yield messages


async def closed(ws: websockets.ClientConnection, within: float) -> Close:
    """The close frame the service sends within ``within`` seconds (nothing else may come)."""
    with pytest.raises(websockets.ConnectionClosed) as ended:
        message = await asyncio.wait_for(ws.recv(), within)
        raise AssertionError(f"a message instead of a close: {message!r}")
    assert ended.value.rcvd is not None, "the connection dropped without a close frame"
    return ended.value.rcvd


async def sse_error(messages: AsyncIterator[ServerSentEvent], within: float) -> dict[str, Any]:
    """The ``error`` event that ends the stream within ``within`` seconds, and the end."""

    async def rest() -> list[ServerSentEvent]:
        return [message async for message in messages]

    last = await asyncio.wait_for(rest(), within)  # returns only once the stream ended
    assert [m.event for m in last] == ["error"], last
    return dict(json.loads(last[0].data)["error"])


async def refused_ws(service: Service, token: str, task_id: str) -> Close:
    async with websockets.connect(ws_url(service, token, task_id)) as ws:
        return await closed(ws, 5)


async def refused_sse(service: Service, key: str, task_id: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        return await client.get(
            "/api/v1/events/stream",
            params={"aggregate": "task", "aggregate_id": task_id, "from_seq": 1},
            headers={"X-API-Key": key},
        )


async def admitted_again(service: Service, token: str, task_id: str) -> None:
    """A WebSocket of ``token`` is admitted again within the margin (retried while refused)."""
    started = time.monotonic()
    while time.monotonic() - started < MARGIN_S:
        async with websockets.connect(ws_url(service, token, task_id)) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                first = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert first["type"] == "TaskSubmitted"
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no slot came back within {MARGIN_S} s of a client leaving")


async def live_consumers(service: Service) -> list[ConsumerInfo]:
    """The stream's ephemeral consumers: the live feeds' (the projectors' are durable)."""
    infos = await service.runtime.store.js.consumers_info(service.runtime.settings.stream)
    return [info for info in infos if not info.config.durable_name]


async def no_live_consumers(service: Service) -> None:
    """The live feeds' consumers are all gone, at the latest a second from now."""
    started = time.monotonic()
    while left := await live_consumers(service):
        if time.monotonic() - started > MARGIN_S:
            raise AssertionError(f"{len(left)} live consumers left behind")
        await asyncio.sleep(0.05)


async def test_revoking_a_key_ends_its_open_sse_stream_and_websocket(live: Service) -> None:
    rita, rita_task = await operator(live, "rita")
    sam, sam_task = await operator(live, "sam")
    async with (
        websocket(live, rita, rita_task) as rita_ws,
        sse(live, {"X-API-Key": rita}, rita_task) as rita_sse,
        websocket(live, sam, sam_task) as sam_ws,
    ):
        await revoke_api_key(live.runtime.commands, rita.split("_")[1], actor="user:admin")
        revoked = time.monotonic()
        close, error = await asyncio.gather(
            closed(rita_ws, CACHE_S + MARGIN_S), sse_error(rita_sse, CACHE_S + MARGIN_S)
        )
        assert time.monotonic() - revoked < CACHE_S + MARGIN_S
        assert close.code == 4401
        assert close.reason.startswith("api_key_revoked")
        assert (error["status"], error["code"]) == (401, "api_key_revoked")

        # Another key's feed stays open and keeps delivering.
        cancel = await live.http.post(f"/tasks/{sam_task}/cancel", json={})
        assert cancel.status_code == 202, cancel.text
        pushed = json.loads(await asyncio.wait_for(sam_ws.recv(), 5))
        assert (pushed["type"], pushed["seq"]) == ("TaskCancelled", cancel.json()["seq"])

    # And the revoked key opens no new feed.
    with pytest.raises(websockets.InvalidStatus):
        await refused_ws(live, rita, rita_task)
    assert (await refused_sse(live, rita, rita_task)).status_code == 401


async def test_a_tokens_feeds_end_when_it_expires(live: Service) -> None:
    _, task_id = await operator(live, "tess")
    expires = int(time.time()) + 2
    token = jwt.encode({"sub": "tess", "role": "operator", "exp": expires}, JWT_SECRET)
    async with (
        websocket(live, token, task_id) as ws,
        sse(live, {"Authorization": f"Bearer {token}"}, task_id) as source,
    ):
        within = expires - time.time() + MARGIN_S
        close, error = await asyncio.gather(closed(ws, within), sse_error(source, within))
    assert time.time() >= expires - 0.05  # not before its time
    assert close.code == 4401
    assert close.reason.startswith("token_expired")
    assert (error["status"], error["code"]) == (401, "token_expired")


async def test_one_key_holds_only_so_many_live_feeds(live: Service) -> None:
    uma, uma_task = await operator(live, "uma")
    vic, vic_task = await operator(live, "vic")
    async with contextlib.AsyncExitStack() as held:
        first = await held.enter_async_context(websocket(live, uma, uma_task))
        await held.enter_async_context(websocket(live, uma, uma_task))
        await held.enter_async_context(sse(live, {"X-API-Key": uma}, uma_task))

        refused = await refused_ws(live, uma, uma_task)
        assert refused.code == 4429
        assert refused.reason.startswith("live_feed_key_limit_reached")
        answer = await refused_sse(live, uma, uma_task)
        assert answer.status_code == 429
        assert answer.json()["error"]["code"] == "live_feed_key_limit_reached"

        # Another key is not held back by this one's share.
        async with websocket(live, vic, vic_task), sse(live, {"X-API-Key": vic}, vic_task):
            pass

        # A client that leaves gives its slot back at once.
        await first.close()
        await admitted_again(live, uma, uma_task)


async def test_the_service_holds_only_so_many_live_feeds(live: Service) -> None:
    keys = [await operator(live, user) for user in ("wes", "xia", "yan")]
    (wes, wes_task), (xia, xia_task), (yan, yan_task) = keys
    async with contextlib.AsyncExitStack() as held:
        feeds = [
            await held.enter_async_context(websocket(live, key, task))
            for key, task in ((wes, wes_task), (xia, xia_task))
            for _ in range(PER_KEY)
        ]
        assert len(feeds) == TOTAL

        refused = await refused_ws(live, yan, yan_task)
        assert refused.code == 4429
        assert refused.reason.startswith("live_feed_limit_reached")
        answer = await refused_sse(live, yan, yan_task)
        assert answer.status_code == 429
        assert answer.json()["error"]["code"] == "live_feed_limit_reached"

        await feeds[0].close()
        await admitted_again(live, yan, yan_task)


async def test_a_clients_consumer_goes_when_it_does(live: Service) -> None:
    zoe, zoe_task = await operator(live, "zoe")
    ada, ada_task = await operator(live, "ada")
    await no_live_consumers(live)  # nor did the tests before
    async with contextlib.AsyncExitStack() as held:
        for _ in range(PER_KEY):
            await held.enter_async_context(websocket(live, zoe, zoe_task))
            await held.enter_async_context(sse(live, {"X-API-Key": ada}, ada_task))
        held_open = await live_consumers(live)
        assert len(held_open) == 2 * PER_KEY
        # The backstop, should a feed die without deleting its consumer.
        assert all(0 < (c.config.inactive_threshold or 0) <= 5 for c in held_open)
    await no_live_consumers(live)

    # An attacker's connect/disconnect cycles: 300 WebSockets and SSE streams, several at once,
    # leave nothing behind (a client may be refused while its earlier feeds are taken down).
    admitted: list[str] = []

    async def websockets_come_and_go() -> None:
        for _ in range(50):
            async with websockets.connect(ws_url(live, zoe, zoe_task)) as ws:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                    admitted.append("ws")

    async def streams_come_and_go() -> None:
        params: dict[str, str | int] = {
            "aggregate": "task",
            "aggregate_id": ada_task,
            "from_seq": 1,
        }
        async with httpx.AsyncClient(base_url=live.base_url, timeout=10) as client:
            for _ in range(50):
                async with client.stream(
                    "GET", "/api/v1/events/stream", params=params, headers={"X-API-Key": ada}
                ) as stream:
                    assert stream.status_code in (200, 429), stream.status_code
                    if stream.status_code == 200:
                        admitted.append("sse")

    await asyncio.gather(
        *(websockets_come_and_go() for _ in range(PER_KEY)),
        *(streams_come_and_go() for _ in range(PER_KEY)),
    )
    assert len(admitted) >= 100, admitted  # most were served: each made a consumer
    await no_live_consumers(live)
    # And every slot came back: each key holds its whole share again.
    async with contextlib.AsyncExitStack() as held:
        for _ in range(PER_KEY):
            await held.enter_async_context(websocket(live, zoe, zoe_task))
            await held.enter_async_context(sse(live, {"X-API-Key": ada}, ada_task))


def test_a_cap_below_one_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JETFLOW_LIVE_FEEDS_PER_KEY must be at least 1"):
        Settings(data_dir=tmp_path, live_feeds_per_key=0)
    with pytest.raises(ValueError, match="JETFLOW_LIVE_FEEDS_TOTAL must be at least 1"):
        Settings(data_dir=tmp_path, live_feeds_total=0)
