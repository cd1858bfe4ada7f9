"""Finding 10: a full JetStream store answered 500 with tracebacks, one command was appended while
its client was told nothing was recorded, and health stayed healthy.

Each story runs a served jetflow on a nats-server of its own whose store is made tiny, and fills
it over HTTP as a client would: first the server's ``max_file_store`` (the embedded default's only
limit, shared by the event stream, the idempotency bucket and every other stream), then the
stream's own ``JETFLOW_STREAM_MAX_BYTES``. A refused command is 507 ``event_store_full`` and
records nothing; the command whose append crossed the server's limit (its answer then found no
room in the idempotency bucket) is answered with what it appended, and so is its resend; health
says ``degraded`` until space is freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client

from adapters.nats_server import EmbeddedNatsServer
from api.settings import Settings
from tests.conftest import Service, start_service
from tests.security.conftest import embedded_env, jetflow

POOL_BYTES = 96 * 1024  # the server's max_file_store
BALLAST_BYTES = 40 * 1024  # another stream's share of it, deleted to free space
STREAM_BYTES = 48 * 1024  # the event stream's own limit, in the second story
TASK = {"code": "print('fill the store')" + " " * 300}


@dataclass
class Served:
    service: Service
    nc: Client

    @property
    def http(self) -> httpx.AsyncClient:
        return self.service.http

    async def last_seq(self) -> int:
        return await self.service.runtime.store.last_seq()

    async def used(self) -> int:
        """What the server counts against its ``max_file_store``: every stream's bytes."""
        return int((await self.nc.jetstream().account_info()).storage)


@contextlib.asynccontextmanager
async def served(
    tmp_path: Path, *, pool_bytes: int = POOL_BYTES, timers: bool = False, **settings: Any
) -> AsyncIterator[Served]:
    config = tmp_path / "tiny.conf"
    config.write_text(f"jetstream {{\n  max_file_store: {pool_bytes}\n}}\n")
    server = EmbeddedNatsServer(store_dir=tmp_path / "nats", config_file=config)
    await server.start()
    nc = await nats.connect(server.url)
    service: Service | None = None
    try:
        service = await start_service(
            Settings(
                nats_url=server.url,
                data_dir=tmp_path / "data",
                stream="FULL",
                rate_limit_per_minute=100_000,
                **settings,
            ),
            timers=timers,
        )
        yield Served(service, nc)
    finally:
        if service is not None:
            await service.stop()
        await nc.close()
        await server.stop()


async def submit(http: httpx.AsyncClient, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return await http.post("/tasks", json=TASK, headers=headers)


def assert_store_full(answer: httpx.Response) -> None:
    assert answer.status_code == 507, answer.text
    error = answer.json()["error"]
    assert error["code"] == "event_store_full"
    assert "nothing was recorded" in error["message"]
    assert "Traceback" not in answer.text


async def health(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    answer = await http.get("/health")
    return answer.status_code, answer.json()


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Records of the service's own code that carry a traceback (a 500, a dead timer loop)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.exc_info and r.name.startswith(("api", "handlers", "adapters"))
    ]


async def test_a_full_server_store_refuses_with_507_and_the_crossing_command_stays_truthful(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with served(tmp_path) as system:
        # Given another stream holding part of the server's store
        js = system.nc.jetstream()
        await js.add_stream(name="BALLAST", subjects=["ballast"])
        for _ in range(BALLAST_BYTES // 4096):
            await js.publish("ballast", b"b" * 4096)

        # and the service's own writes filling the rest, up to one task short of the limit
        before = await system.used()
        assert (await submit(system.http)).status_code == 202
        size = await system.used() - before
        while await system.used() + size < POOL_BYTES:
            assert (await submit(system.http)).status_code == 202

        # When the next command's append crosses the limit (stored; its remembered answer then
        # finds no room), it is answered with what it appended, as is its resend
        crossing = await submit(system.http, key="crossing")
        assert crossing.status_code == 202, crossing.text
        assert await system.used() >= POOL_BYTES
        seq = await system.last_seq()
        assert crossing.json()["seq"] == seq
        resent = await submit(system.http, key="crossing")
        assert resent.status_code == 202, resent.text
        assert resent.json()["task_id"] == crossing.json()["task_id"]
        assert resent.json()["seq"] == seq

        # Then every further command is refused with 507 and records nothing
        for key in (None, "refused", None, "refused"):
            assert_store_full(await submit(system.http, key=key))
        assert await system.last_seq() == seq

        # and health says the store is full
        status, body = await health(system.http)
        assert (status, body["status"]) == (503, "degraded")
        store = body["components"]["event_store"]
        assert store["status"] == "full" and store["used_bytes"] > 0
        assert store["limit_bytes"] is None  # the server's own limit is not shown to clients

        # When space is freed, health is ok again without any write having been tried
        await js.delete_stream("BALLAST")
        status, body = await health(system.http)
        assert (status, body["status"]) == (200, "healthy"), body
        assert body["components"]["event_store"]["status"] == "ok"
        # the crossing command is still answered as first (its answer is remembered now),
        # and the refused one, which recorded nothing, is recorded on its resend
        again = await submit(system.http, key="crossing")
        assert (again.status_code, again.json()["seq"]) == (202, seq)
        recorded = await submit(system.http, key="refused")
        assert recorded.status_code == 202, recorded.text
        assert recorded.json()["seq"] == seq + 1 == await system.last_seq()
    assert tracebacks(caplog) == []


async def test_the_streams_own_limit_refuses_with_507_until_it_is_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with served(
        tmp_path,
        pool_bytes=8 * STREAM_BYTES,  # a stream's limit is reserved in the server's store
        timers=True,
        stream_max_bytes=STREAM_BYTES,
        node_silence_s=0.5,
        timer_interval_s=0.1,
    ) as system:
        # Given a worker node that is online, and commands filling the stream to its limit
        worker = await system.service.client_as("worker", "n1")
        assert (await worker.post("/nodes/n1/heartbeat", json={})).status_code == 202
        for _ in range(STREAM_BYTES // 200):
            answer = await submit(system.http)
            if answer.status_code != 202:
                break
        assert_store_full(answer)
        seq = await system.last_seq()

        # Then commands are refused with 507 and record nothing, the timer that finds the node
        # silent cannot record it either (and keeps running), and health says the store is full
        await asyncio.sleep(1.0)
        assert_store_full(await submit(system.http, key="later"))
        assert await system.last_seq() == seq
        status, body = await health(system.http)
        assert (status, body["status"]) == (503, "degraded")
        store = body["components"]["event_store"]
        assert (store["status"], store["limit_bytes"]) == ("full", STREAM_BYTES)
        assert STREAM_BYTES - 2048 < store["used_bytes"] <= STREAM_BYTES

        # When the operator raises the stream's limit, health is ok again, commands are
        # recorded, and the timer records the silent node as offline
        info = await system.nc.jetstream().stream_info("FULL")
        config = {**info.config.as_dict(), "max_bytes": 2 * STREAM_BYTES}
        reply = await system.nc.request("$JS.API.STREAM.UPDATE.FULL", json.dumps(config).encode())
        assert "error" not in json.loads(reply.data), reply.data
        status, body = await health(system.http)
        assert (status, body["components"]["event_store"]["status"]) == (200, "ok"), body
        assert (await submit(system.http, key="later")).status_code == 202
        for _ in range(50):
            nodes = (await system.http.get("/nodes")).json()["items"]
            if [n["status"] for n in nodes if n["node_id"] == "n1"] == ["offline"]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the silent node was never recorded offline: {nodes}")
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("value", ["0", "-5", "1e6", "٣", "lots"])
def test_a_stream_limit_that_is_not_a_positive_byte_count_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("JETFLOW_STREAM_MAX_BYTES", value)
    with pytest.raises(ValueError, match="JETFLOW_STREAM_MAX_BYTES must be a positive number"):
        Settings.from_env()


async def test_a_stream_limit_the_servers_store_cannot_hold_stops_the_start_in_one_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "tiny.conf"
    config.write_text(f"jetstream {{\n  max_file_store: {POOL_BYTES}\n}}\n")
    async with EmbeddedNatsServer(store_dir=tmp_path / "nats", config_file=config) as server:
        env = embedded_env(tmp_path / "data")
        env.update(NATS_URL=server.url, JETFLOW_STREAM_MAX_BYTES=str(4 * POOL_BYTES))
        code, _, err = await jetflow(env, "serve", timeout=60)
    assert code == 1, err[-2000:]
    assert "JETFLOW_STREAM_MAX_BYTES" in err and "Traceback" not in err, err[-2000:]
