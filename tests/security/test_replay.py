"""Finding 16: the read models are derived data. A corrupt projection database does not keep
the service down for good: ``serve`` says what to do, and ``jetflow replay`` recreates it from
nothing out of the event stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js.errors import NotFoundError
from sqlalchemy import func, select

from adapters.nats_server import EmbeddedNatsServer
from api.runtime import Runtime
from api.settings import Settings
from handlers.commands import CommandContext
from handlers.tasks import SubmitTaskRequest, submit_task
from projections.tasks import tasks
from slices.catalogue import CATALOGUE

JETFLOW = Path(sys.executable).parent / "jetflow"


async def jetflow(*args: str, settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "NATS_URL": settings.nats_url or "",
        "JETFLOW_DATA_DIR": str(settings.data_dir),
        "JETFLOW_STREAM": settings.stream,
    }
    return await asyncio.to_thread(
        subprocess.run, [str(JETFLOW), *args], env=env, capture_output=True, text=True, timeout=180
    )


@pytest.fixture
async def settings(nats_server: EmbeddedNatsServer, tmp_path: Path) -> AsyncIterator[Settings]:
    """The session's nats-server is shared: the stream must go with the test, whatever
    happened, or its ``ev.>`` would overlap every later test's stream."""
    yield Settings(nats_url=nats_server.url, data_dir=tmp_path, stream="REPLAYCORRUPT")
    nc = await nats.connect(nats_server.url)
    with contextlib.suppress(NotFoundError):
        await nc.jetstream().delete_stream("REPLAYCORRUPT")
    await nc.close()


async def test_replay_recreates_a_corrupt_projection_database(
    settings: Settings, tmp_path: Path
) -> None:
    runtime = Runtime(settings, CATALOGUE)
    await runtime.open()
    for _ in range(3):
        await submit_task(runtime.commands, SubmitTaskRequest(code="print(1)"), CommandContext())
    await runtime.stop()
    corrupt = tmp_path / "projections.db"
    await asyncio.to_thread(corrupt.write_bytes, b"this is not a database " * 200)

    refused = await jetflow("serve", "--port", "0", settings=settings)
    assert refused.returncode == 1
    assert "jetflow replay" in refused.stderr and "Traceback" not in refused.stderr

    replayed = await jetflow("replay", settings=settings)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    kept = await asyncio.to_thread(lambda: list(tmp_path.glob("projections.db.unreadable-*")))
    assert kept  # the unreadable file is kept for inspection

    again = Runtime(settings, CATALOGUE)
    await again.open()
    try:
        async with again.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(tasks)) == 3
    finally:
        await again.stop()
