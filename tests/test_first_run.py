"""A new user's first `jetflow serve`: an admin key written to a private file once, a banner that
says where to go, `GET /` pointing at the API, and the liveness and readiness probes.

The served stories run one `jetflow serve` child process (embedded nats-server, SQLite) for the
module, the way a user starts it; the readiness failures run on in-process services, where a
projector can be stopped and a database closed to connections.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from adapters.credentials import new_api_key
from adapters.idempotency import KeyValueIdempotencyRecords
from api.runtime import Runtime
from api.settings import Settings
from handlers.access import BOOTSTRAP_KEY_ID, issue_bootstrap_key
from handlers.commands import CommandService
from slices.catalogue import CATALOGUE
from tests.conftest import PG_ADMIN_DSN, Service, free_port
from tests.faults.harness import ServeProcess
from tests.test_serve import embedded_env

pytestmark = pytest.mark.asyncio

BANNER_END = "  more keys:"


async def until_logged(serve: ServeProcess, text: str, since: int = 0) -> str:
    """The service's log from offset ``since`` once it holds ``text``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = serve.log_path.read_text(errors="replace")[since:]
        if text in log:
            return log
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} never logged\n{serve.log_tail()}")


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServeProcess]:
    root = tmp_path_factory.mktemp("first-run")
    # As a person at a terminal reads it (JSON logs carry the banner as one record).
    env = {**embedded_env(root / "data", free_port()), "JETFLOW_LOG_FORMAT": "console"}
    serve = ServeProcess(env, root / "serve.log")
    try:
        await serve.start()
        await until_logged(serve, BANNER_END)
        yield serve
    finally:
        await serve.reap()


def data_dir(serve: ServeProcess) -> Path:
    return Path(serve.env["JETFLOW_DATA_DIR"])


async def test_a_first_start_writes_an_admin_key_to_a_private_file(served: ServeProcess) -> None:
    key_file = data_dir(served) / "bootstrap-admin-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    token = key_file.read_text().strip()
    assert token.startswith(f"jfk_{BOOTSTRAP_KEY_ID}_")
    log = served.log_path.read_text()
    assert str(key_file) in log
    assert token.split("_", 2)[2] not in log, "the key's secret reached the log"
    async with httpx.AsyncClient(
        base_url=f"{served.base_url}/api/v1", headers={"X-API-Key": token}, timeout=10
    ) as admin:
        # Usable as soon as the banner is out: the service waited for its read model.
        submitted = await admin.post("/tasks", json={"code": "print(1)"})
        assert submitted.status_code == 202, submitted.text
        task = submitted.json()
        read = await admin.get(f"/tasks/{task['task_id']}", params={"wait_for_seq": task["seq"]})
        assert read.json()["status"] == "pending"
        audit = (await admin.get("/audit/events", params={"aggregate": "apikey"})).json()
    [created] = audit["events"]
    assert created["actor"] == "system:bootstrap"
    assert created["payload"]["role"] == "admin" and created["payload"]["user"] == "admin"


async def test_the_banner_says_where_the_api_is_and_how_to_make_keys(
    served: ServeProcess,
) -> None:
    log = served.log_path.read_text()
    base = served.base_url
    banner = log[log.index(f"jetflow {version('jetflow')} is serving {base}") :]
    lines = banner.splitlines()[:5]
    assert lines[1] == f"  API:         {base}/api/v1 (every route but health needs an API key)"
    assert lines[2] == f"  API browser: {base}/schema/swagger"
    assert lines[3].startswith(f"  admin key:   in {data_dir(served) / 'bootstrap-admin-key'} ")
    assert re.fullmatch(
        r"  more keys:   \S*jetflow keys create --role admin\|operator\|worker\|viewer "
        r"--user NAME \(with this service's JETFLOW_DATA_DIR\)",
        lines[4],
    ), lines[4]
    # There is no console yet: the banner names no page that would answer 404.
    assert "console" not in banner.lower()
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        assert (await http.get("/schema/swagger")).status_code == 200


async def test_the_root_points_the_way_in_and_the_probes_answer(served: ServeProcess) -> None:
    async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as anonymous:
        root = await anonymous.get("/")
        assert root.status_code == 200
        document = root.json()
        assert document["api"] == "/api/v1" and document["docs"] == "/schema/swagger"
        assert document["version"] == version("jetflow")
        assert "jetflow keys create" in document["authentication"]
        assert str(data_dir(served)) not in root.text  # no server paths for anonymous callers
        assert (await anonymous.get(document["openapi"])).status_code == 200
        assert (await anonymous.get(document["health"])).status_code == 200

        live = await anonymous.get("/api/v1/health/live")
        assert (live.status_code, live.json()) == (200, {"status": "alive"})
        ready = await anonymous.get("/api/v1/health/ready")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready" and body["failed"] == []
        assert {name: check["status"] for name, check in body["checks"].items()} == {
            "nats": "pass",
            "stream": "pass",
            "database": "pass",
            "projections": "pass",
        }
        assert body["checks"]["projections"]["max_lag_events"] == 1000
        assert "nats://" not in ready.text  # where NATS listens is for admins only


async def test_a_restart_makes_no_second_key_even_without_the_file(served: ServeProcess) -> None:
    key_file = data_dir(served) / "bootstrap-admin-key"
    token = key_file.read_text().strip()
    key_file.unlink()
    assert await served.stop() == 0
    since = served.log_path.stat().st_size
    await served.start()
    log = await until_logged(served, BANNER_END, since)
    assert not key_file.exists()
    assert "made the admin key" not in log
    assert "  admin key:" not in log
    async with httpx.AsyncClient(
        base_url=f"{served.base_url}/api/v1", headers={"X-API-Key": token}, timeout=10
    ) as admin:
        audit = (await admin.get("/audit/events", params={"aggregate": "apikey"})).json()
    assert [e["type"] for e in audit["events"]] == ["ApiKeyCreated"]


async def test_two_services_on_one_empty_log_make_one_key(settings: Settings) -> None:
    """Each with its own command path, as two processes on one NATS_URL would be: the fixed key
    id makes the second start's key a conflict the aggregate refuses."""
    runtime = Runtime(settings, CATALOGUE)
    await runtime.open()
    try:
        idempotency = await KeyValueIdempotencyRecords.open(
            runtime.store.js, f"{settings.stream}_idempotency"
        )
        services = [CommandService(runtime.store, idempotency) for _ in range(2)]
        issued = await asyncio.gather(*(issue_bootstrap_key(s) for s in services))
        assert sum(found is not None for found in issued) == 1
        assert await issue_bootstrap_key(runtime.commands) is None
        keys = await runtime.store.read_subject("ev.apikey.>")
        assert [(e.aggregate_id, e.type) for e in keys] == [(BOOTSTRAP_KEY_ID, "ApiKeyCreated")]
    finally:
        await runtime.stop()


async def test_a_fixed_key_id_must_read_as_one() -> None:
    with pytest.raises(ValueError, match="16 letters and digits"):
        new_api_key("short")
    assert new_api_key(BOOTSTRAP_KEY_ID).token.startswith(f"jfk_{BOOTSTRAP_KEY_ID}_")


async def test_not_ready_while_a_stopped_projector_falls_behind(
    service_factory: Callable[..., Awaitable[Service]],
) -> None:
    # No timers: nothing but this test's tasks (no seeded catalogue) reaches the stream.
    service = await service_factory(ready_max_lag_events=2, timers=False)
    await service.runtime.stop_background()  # the projectors stop; the consumers stay
    for n in range(3):
        assert (await service.http.post("/tasks", json={"code": f"print({n})"})).status_code == 202
    ready = await service.http.get("/health/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not_ready" and body["failed"] == ["projections"]
    assert body["checks"]["projections"] == {
        "status": "fail",
        "max_lag_events": 2,
        "behind": {"tasks": 3},
    }
    assert (await service.http.get("/health/live")).status_code == 200


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_not_ready_while_the_database_refuses_connections(
    service_factory: Callable[..., Awaitable[Service]], backend: str
) -> None:
    service = await service_factory(timers=False)
    assert service.runtime.settings.db_url is not None
    database = urlsplit(service.runtime.settings.db_url).path.lstrip("/")
    assert (await service.http.get("/health/ready")).status_code == 200
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
        )
        ready = await service.http.get("/health/ready")
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert body["failed"] == ["database"]
        assert body["checks"]["database"]["status"] == "fail"
        assert "postgres" not in ready.text  # no driver message, no address
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
    for _ in range(50):  # the pool replaces the connections it lost
        if (await service.http.get("/health/ready")).status_code == 200:
            break
        await asyncio.sleep(0.05)
    assert (await service.http.get("/health/ready")).status_code == 200


async def test_a_negative_lag_bound_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JETFLOW_READY_MAX_LAG_EVENTS", "-1")
    with pytest.raises(ValueError, match="JETFLOW_READY_MAX_LAG_EVENTS must be 0 or more"):
        Settings.from_env()
