"""The attacked system, two ways: real `jetflow worker` processes against the test's service
(`start_worker`), stopped when the test ends; and `jetflow serve` as a child process with no
NATS_URL (the embedded default, its nats-server generated with nkeys), reached only the way an
attacker on the machine could: its HTTP port, the NATS port in its ports file, and whatever
credentials a test hands over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError

from adapters.nats_auth import NatsCredentials, connect, inbox_prefix
from tests.conftest import Service, free_port
from tests.faults.harness import JETFLOW, REPO, ServeProcess


def embedded_env(data_dir: Path) -> dict[str, str]:
    """Nothing from the developer's shell: above all no NATS_URL, so the service runs its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "JETFLOW_"))}
    env.update(JETFLOW_DATA_DIR=str(data_dir), JETFLOW_PORT=str(free_port()))
    return env


async def jetflow(env: dict[str, str], *args: str, timeout: float = 90) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        JETFLOW,
        *args,
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return int(process.returncode or 0), out.decode(), err.decode(errors="replace")


def nats_url(data_dir: Path) -> str:
    """Where the embedded server listens, as anyone who can list the data folder learns it."""
    [ports] = (data_dir / "nats").glob("*.ports")
    return str(json.loads(ports.read_text())["nats"][0])


@dataclass
class Attempt:
    """A connection an attacker tried, and the asynchronous errors the server sent it."""

    client: Client | None
    refused: str | None = None
    errors: list[str] = field(default_factory=list)


async def attempt(url: str, credentials: NatsCredentials | None) -> Attempt:
    errors: list[str] = []

    async def record(error: Exception) -> None:
        errors.append(str(error))

    try:
        client = await connect(
            [url],
            credentials,
            "attacker",
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=3,
            error_cb=record,
        )
    except NatsError as refused:
        return Attempt(None, str(refused), errors)
    return Attempt(client, None, errors)


@dataclass
class Embedded:
    serve: ServeProcess
    data_dir: Path
    seeds: Path

    @property
    def env(self) -> dict[str, str]:
        return self.serve.env

    @property
    def url(self) -> str:
        return nats_url(self.data_dir)

    def admin(self) -> httpx.AsyncClient:
        return api(self.serve.base_url, self.serve.api_key)

    def api_key_client(self, key: str) -> httpx.AsyncClient:
        return api(self.serve.base_url, key)

    async def cli(self, *args: str) -> tuple[int, str, str]:
        return await jetflow(self.env, *args)

    async def api_key(self, role: str, user: str) -> str:
        code, out, err = await self.cli("keys", "create", "--role", role, "--user", user)
        assert code == 0, err[-2000:]
        return out.split()[-1]

    async def nats_user(self, role: str, user: str) -> NatsCredentials:
        """`jetflow nats-users create` against the running service, seed written to a file."""
        seed = self.seeds / f"{user}.nk"
        code, _, err = await self.cli(
            "nats-users", "create", "--role", role, "--user", user, "--seed-file", str(seed)
        )
        assert code == 0, err[-2000:]
        assert "reloaded its users" in err, err[-2000:]
        assert seed.stat().st_mode & 0o077 == 0
        return NatsCredentials(seed_file=seed, inbox_prefix=inbox_prefix(user))


async def start_embedded(root: Path, **env: str) -> Embedded:
    data_dir = root / "data"
    serve = ServeProcess({**embedded_env(data_dir), **env}, root / "serve.log")
    await serve.start()
    embedded = Embedded(serve, data_dir, root / "seeds")
    embedded.seeds.mkdir()
    serve.api_key = await embedded.api_key("admin", "admin")
    return embedded


def api(base_url: str, key: str | None = None) -> httpx.AsyncClient:
    headers = {"X-API-Key": key} if key else {}
    return httpx.AsyncClient(base_url=f"{base_url}/api/v1", headers=headers, timeout=30)


async def until_accepted(
    http: httpx.AsyncClient, method: str, path: str, **request: Any
) -> httpx.Response:
    """A key made by `jetflow keys create` works once the service's read model holds it."""
    for _ in range(200):
        answer = await http.request(method, path, **request)
        if answer.status_code != 401:
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError(f"{method} {path}: the key was never accepted")


async def ask(
    client: Client, subject: str, body: object, headers: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """A NATS request; None when nothing answers (the server dropped a forbidden publish)."""
    try:
        reply = await client.request(subject, json.dumps(body).encode(), timeout=2, headers=headers)
    except (NatsError, TimeoutError):
        return None
    return dict(json.loads(reply.data))


@pytest.fixture(scope="module")
async def embedded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Embedded]:
    """One served system per test module: starting one costs seconds of imports."""
    served = await start_embedded(tmp_path_factory.mktemp("embedded"))
    try:
        yield served
    finally:
        await served.serve.stop()
        await served.serve.reap()


StartWorker = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def start_worker(service: Service) -> AsyncIterator[StartWorker]:
    """Start ``jetflow worker`` with a worker-role key in its environment *and* on its command
    line, where an unconfined task would find it; extra arguments are its caps and sandbox."""
    started: list[asyncio.subprocess.Process] = []

    async def start(node_id: str, *extra: str, key: str | None = None) -> Any:
        key = key or await service.key("worker", node_id)
        process = await asyncio.create_subprocess_exec(
            JETFLOW,
            "worker",
            "--api",
            service.base_url,
            "--node-id",
            node_id,
            "--poll",
            "0.1",
            "--heartbeat",
            "0.5",
            "--api-key",
            key,
            *extra,
            env={**os.environ, "JETFLOW_API_KEY": key},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.communicate(), 30)
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop(process: asyncio.subprocess.Process) -> str:
    """SIGTERM the worker; its stderr (the log)."""
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    return stderr.decode(errors="replace")


async def submit(service: Service, body: dict[str, Any], user: str = "mallory") -> str:
    """A task submitted by an operator who is not the worker's owner."""
    operator = await service.client_as("operator", user)
    answer = await operator.post("/tasks", json=body)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["task_id"])


async def wait_status(service: Service, task_id: str, statuses: set[str]) -> dict[str, Any]:
    task: dict[str, Any] = {"status": "not yet projected"}
    for _ in range(600):
        answer = await service.http.get(f"/tasks/{task_id}")
        if answer.status_code == 200:
            task = answer.json()
            if task["status"] in statuses:
                return task
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} stuck in {task['status']}")
