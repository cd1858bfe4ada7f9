"""Parked events against the served system: a real nats-server, SQLite, HTTP and the CLI.

The service runs the catalogue plus two probe projections on the violation catalogue's events:
``probe`` (policy park) fails on a violation named ``poison…`` until the test "fixes" it,
``probe_halt`` (policy halt) fails on one named ``halt…``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Column, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.envelope import RecordedEvent
from adapters.nats_server import EmbeddedNatsServer
from adapters.sql import insert_ignoring
from api.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from domain.access import Role
from domain.violations import VIOLATIONS
from handlers.access import issue_api_key
from projections.base import Projection
from slices.catalogue import CATALOGUE
from slices.slice import Catalogue
from tests.conftest import PromptServer, Service, api_client, delete_stream, free_port
from tests.test_serve import JETFLOW

probe_metadata = MetaData()
probe_rows = Table("probe_rows", probe_metadata, Column("code", String(64), primary_key=True))
fixed = {"poison": False}


def probe_apply(poison: str, still_failing: Callable[[], bool]) -> Any:
    async def apply(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        for event in events:
            name = event.payload.get("name", "")
            if name.startswith(poison) and still_failing():
                raise ValueError(f"cannot project {name}")
            if poison == "poison" and "code" in event.payload:
                code = {"code": event.payload["code"]}
                await session.execute(insert_ignoring(session, probe_rows, code))

    return apply


PROBE = Projection(
    name="probe",
    source=VIOLATIONS,
    tables=(probe_rows,),
    apply=probe_apply("poison", lambda: not fixed["poison"]),
)
PROBE_HALT = Projection(
    name="probe_halt",
    source=VIOLATIONS,
    tables=(),
    apply=probe_apply("halt", lambda: True),
    on_failure="halt",
)


def probed_catalogue() -> Catalogue:
    slices = [
        dataclasses.replace(s, projections=(*s.projections, PROBE, PROBE_HALT))
        if VIOLATIONS in s.aggregates
        else s
        for s in CATALOGUE.slices
    ]
    return Catalogue(slices)


@pytest.fixture(scope="module")
async def probed(
    nats_server: EmbeddedNatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    settings = Settings(
        nats_url=nats_server.url,
        data_dir=tmp_path_factory.mktemp("parked"),
        stream=f"PARKED_{uuid.uuid4().hex[:8]}",
        park_after_attempts=2,
    )
    runtime = Runtime(settings, probed_catalogue())
    await runtime.open()
    async with runtime.engine.begin() as conn:
        await conn.run_sync(probe_metadata.create_all)
    await runtime.start_handlers(timers=False)
    admin_key, _ = await issue_api_key(runtime.commands, Role.admin, "admin")
    port = free_port()
    server = PromptServer(
        uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    service = Service(runtime, api_client(base, admin_key), base, server, task, admin_key, True, [])
    for _ in range(200):  # the key works once the api_keys read model has it
        if (await service.http.get("/parked")).status_code == 200:
            break
        await asyncio.sleep(0.05)
    try:
        yield service
    finally:
        await service.stop()
        # Its ev.> would overlap every later test's stream on the session's nats-server.
        await delete_stream(settings, nats_server.url)


async def until(http: httpx.AsyncClient, path: str, check: Callable[[Any], bool]) -> Any:
    for _ in range(200):
        body = (await http.get(path)).json()
        if check(body):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never passed: {body}")


async def add_violation(http: httpx.AsyncClient, code: str, name: str) -> int:
    answer = await http.post("/violations", json={"code": code, "name": name})
    assert answer.status_code == 202, answer.text
    return int(answer.json()["seq"])


async def cli(service: Service, *args: str) -> tuple[int, str, str]:
    settings = service.runtime.settings
    env = {
        **os.environ,
        "NATS_URL": service.runtime.nats_url,
        "JETFLOW_STREAM": settings.stream,
        "JETFLOW_DATA_DIR": str(Path(settings.data_dir)),
    }
    process = await asyncio.create_subprocess_exec(
        JETFLOW,
        "parked",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, out.decode(), err.decode()


async def scrape(service: Service) -> str:
    async with httpx.AsyncClient(headers=service.http.headers) as client:
        return (await client.get(f"{service.base_url}/metrics")).text


def gauge(text: str, name: str, projection: str) -> float:
    prefix = f'{name}{{projection="{projection}"}} '
    [line] = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line[len(prefix) :])


async def probe_codes(service: Service) -> set[str]:
    async with service.runtime.sessions() as session:
        return set((await session.scalars(select(probe_rows.c.code))).all())


async def test_a_poison_event_is_parked_listed_retried_and_skipped(probed: Service) -> None:
    http = probed.http
    await add_violation(http, "before", "fine")
    poison_seq = await add_violation(http, "bad", "poison one")
    after_seq = await add_violation(http, "after", "fine too")

    # Parked after two attempts of its own; the event after it is applied all the same.
    await until(http, f"/violations?wait_for_seq={after_seq}", lambda b: True)
    parked = await until(http, "/parked", lambda b: len(b) == 1)
    [entry] = parked
    assert (entry["projection"], entry["seq"], entry["event_type"]) == (
        "probe",
        poison_seq,
        "ViolationDefined",
    )
    assert entry["attempts"] == 2 and "ValueError: cannot project poison one" in entry["error"]
    assert entry["status"] == "parked"
    checkpoint = probed.runtime.progress
    await until(http, "/health", lambda b: checkpoint.applied.get("probe", 0) >= after_seq)
    assert await probe_codes(probed) == {"before", "after"}

    health = await http.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    lag = health.json()["components"]["projections"]["probe"]
    assert lag["parked_events"] == 1 and lag["halted"] is False
    metrics = await scrape(probed)
    assert gauge(metrics, "jetflow_projection_parked_events", "probe") == 1
    assert gauge(metrics, "jetflow_projection_parked_events", "tasks") == 0

    # Admins only.
    viewer = await probed.client_as("viewer", "vera")
    assert (await viewer.get("/parked")).status_code == 403
    refused = await viewer.post(f"/parked/probe/{poison_seq}/retry")
    assert refused.status_code == 403

    # The CLI lists it from the log.
    code, out, _ = await cli(probed, "list")
    assert code == 0 and f"probe  {poison_seq}  ViolationDefined  attempts=2" in out

    # Still failing: 409, nothing recorded; unknown: 404; bad seq: 4xx with a code.
    still = await http.post(f"/parked/probe/{poison_seq}/retry")
    assert (
        still.status_code == 409 and still.json()["error"]["code"] == "parked_event_still_failing"
    )
    unknown = await http.post("/parked/probe/999999/skip")
    assert (
        unknown.status_code == 404 and unknown.json()["error"]["code"] == "parked_event_not_found"
    )
    bad = await http.post("/parked/probe/0/skip")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"

    # The cause fixed, a retry applies it and unparks it.
    fixed["poison"] = True
    retried = await http.post(f"/parked/probe/{poison_seq}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json()["events"] == ["ParkedEventRetried"]
    assert await probe_codes(probed) == {"before", "bad", "after"}
    assert (await http.get(f"/parked?wait_for_seq={retried.json()['seq']}")).json() == []
    again = await http.post(f"/parked/probe/{poison_seq}/retry")
    assert again.status_code == 409 and again.json()["error"]["code"] == "parked_event_resolved"
    resolved = (await http.get("/parked?include_resolved=true")).json()
    assert [(r["seq"], r["status"]) for r in resolved] == [(poison_seq, "retried")]
    health = await http.get("/health")
    assert health.json()["components"]["projections"]["probe"]["parked_events"] == 0

    # Another poison event, skipped from the CLI: resolved without being applied.
    fixed["poison"] = False
    skip_seq = await add_violation(http, "worse", "poison two")
    await until(http, "/parked", lambda b: [p["seq"] for p in b] == [skip_seq])
    code, out, _ = await cli(probed, "skip", "probe", str(skip_seq))
    assert code == 0 and f"skipped probe {skip_seq}" in out
    await until(http, "/parked", lambda b: b == [])
    assert "worse" not in await probe_codes(probed)
    code, _, err = await cli(probed, "skip", "probe", str(skip_seq))
    assert code == 1 and "already skipped" in err
    assert (await http.get("/health")).json()["status"] == "healthy"


async def test_a_halt_projection_stops_loudly_instead(
    probed: Service, caplog: pytest.LogCaptureFixture
) -> None:
    http = probed.http
    seq = await add_violation(http, "stopper", "halt here")
    health = await until(
        http, "/health", lambda b: b["components"]["projections"]["probe_halt"]["halted"]
    )
    assert health["status"] == "degraded"
    assert health["components"]["projections"]["probe_halt"]["parked_events"] == 0
    assert any(
        r.levelname == "ERROR" and "probe_halt HALTED" in r.getMessage() for r in caplog.records
    )
    assert probed.runtime.progress.applied["probe_halt"] < seq
    assert (await http.get("/parked")).json() == []
    metrics = await scrape(probed)
    assert gauge(metrics, "jetflow_projection_halted", "probe_halt") == 1
    assert gauge(metrics, "jetflow_projection_halted", "probe") == 0
