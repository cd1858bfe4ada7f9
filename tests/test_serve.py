"""The README's way in: `jetflow serve` with no NATS_URL brings its own nats-server and SQLite,
keeps its data across restarts, stops cleanly, and `jetflow replay` rebuilds from the stream."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import psutil

from tests.conftest import free_port

JETFLOW = str(Path(sys.executable).parent / "jetflow")


def embedded_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "JETFLOW_"))}
    env.update(JETFLOW_DATA_DIR=str(data_dir), JETFLOW_PORT=str(port))
    return env


async def start_serve(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        JETFLOW, "serve", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )


async def until_healthy(http: httpx.AsyncClient, process: asyncio.subprocess.Process) -> None:
    for _ in range(300):
        if process.returncode is not None:
            raise AssertionError(f"jetflow serve exited with {process.returncode}")
        try:
            if (await http.get("/api/v1/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("jetflow serve never became healthy")


async def create_key(env: dict[str, str], role: str, user: str) -> str:
    """`jetflow keys create` joins the running service's embedded nats-server."""
    keys = await asyncio.create_subprocess_exec(
        JETFLOW,
        "keys",
        "create",
        "--role",
        role,
        "--user",
        user,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(keys.communicate(), 30)
    assert keys.returncode == 0, err.decode()
    return out.decode().strip()


async def until_accepted(http: httpx.AsyncClient, path: str, body: object) -> httpx.Response:
    """A new key works once the service's read model has applied it (moments later)."""
    for _ in range(100):
        answer = await http.post(path, json=body)
        if answer.status_code != 401:
            assert answer.status_code == 202, answer.text
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError("the new key was never accepted")


async def stop(process: asyncio.subprocess.Process) -> tuple[int, str]:
    children = psutil.Process(process.pid).children(recursive=True)
    assert any("nats-server" in child.name() for child in children), "no embedded nats-server"
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    await asyncio.sleep(0.2)
    leftovers = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert leftovers == [], "the embedded nats-server outlived jetflow serve"
    return int(process.returncode or 0), stderr.decode(errors="replace")


async def test_serve_with_embedded_nats_then_replay_then_serve_again(tmp_path: Path) -> None:
    port = free_port()
    env = embedded_env(tmp_path / "data", port)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        serve = await start_serve(env)
        await until_healthy(http, serve)
        anonymous = await http.post("/api/v1/tasks", json={"code": "print(1)"})
        assert anonymous.status_code == 401
        http.headers["X-API-Key"] = await create_key(env, "operator", "ann")
        submitted = (await until_accepted(http, "/api/v1/tasks", {"code": "print(1)"})).json()
        task_id = submitted["task_id"]
        read = await http.get(f"/api/v1/tasks/{task_id}", params={"wait_for_seq": submitted["seq"]})
        assert read.json()["status"] == "pending"
        schema = (await http.get("/schema/openapi.json")).json()
        assert "/api/v1/tasks" in schema["paths"]
        code, stderr = await stop(serve)
        assert code == 0, stderr[-2000:]

        assert (tmp_path / "data" / "projections.db").exists()
        assert (tmp_path / "data" / "nats" / "jetstream").is_dir()

        replay = await asyncio.create_subprocess_exec(
            JETFLOW, "replay", env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(replay.communicate(), 60)
        assert replay.returncode == 0
        assert "tasks: rebuilt from 1 events" in out.decode()

        again = await start_serve(env)
        await until_healthy(http, again)
        kept = await http.get(f"/api/v1/tasks/{task_id}", params={"wait_for_seq": submitted["seq"]})
        assert kept.status_code == 200
        assert kept.json()["task_id"] == task_id
        code, stderr = await stop(again)
        assert code == 0, stderr[-2000:]
