"""jetflow as a user installs it: built (sdist, then the wheel from the sdist, as `uv build`
publishes), installed into a fresh virtualenv outside the checkout, and served with its embedded
defaults alone.

Nothing may come from the checkout: the service runs from the new venv with its working
directory elsewhere, no PYTHONPATH and none of the developer's JETFLOW_*/NATS_* variables, so a
file the package reads next to itself but does not carry (``nats.conf``, the hardware configs,
the violation catalogue) fails the start. Cost: about 10 s on two cores once uv's cache holds the
dependencies (building 2 s, installing 3 s, the served start 3 s); the first run on a machine
downloads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parents[1]
UV = str(Path(sys.executable).parent / "uv")
BUNDLED = ("nats.conf", "hardware_configs.json", "violations.csv", "deploy-plan.example.toml")


async def run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 300)
    text = out.decode(errors="replace")
    assert process.returncode == 0, f"{' '.join(argv)} exited {process.returncode}\n{text[-3000:]}"
    return text


def clean_env(**extra: str) -> dict[str, str]:
    """The user's shell, not the developer's: no jetflow settings, no path into the checkout."""
    drop = ("NATS_", "JETFLOW_", "PYTHON", "VIRTUAL_ENV", "UV_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


async def test_the_wheel_installs_and_serves_outside_the_checkout(tmp_path: Path) -> None:
    assert not tmp_path.is_relative_to(REPO)
    dist, venv, home = tmp_path / "dist", tmp_path / "venv", tmp_path / "home"
    home.mkdir()
    source = await checkout_copy(tmp_path / "source")
    await run(UV, "build", "--quiet", "--out-dir", str(dist), str(source), cwd=home)
    [wheel] = dist.glob("jetflow-*.whl")
    await run(UV, "venv", "--quiet", "--python", sys.executable, str(venv), cwd=home)
    python = venv / "bin" / "python"
    await run(UV, "pip", "install", "--quiet", "--python", str(python), str(wheel), cwd=home)

    env = clean_env(JETFLOW_DATA_DIR=str(tmp_path / "data"), JETFLOW_PORT=str(free_port()))
    where = await run(
        str(python),
        "-c",
        "import api, jetflow_defaults; print(api.__file__); print(jetflow_defaults.__file__)",
        cwd=home,
        env=env,
    )
    for path in where.split():
        assert Path(path).is_relative_to(venv), f"imported from outside the venv: {path}"
    package = Path(where.split()[1]).parent
    assert sorted(p.name for p in package.iterdir() if p.suffix != ".py" and p.is_file()) == sorted(
        BUNDLED
    )

    jetflow = str(venv / "bin" / "jetflow")
    assert (await run(jetflow, "--version", cwd=home, env=env)).strip() == (
        f"jetflow {version('jetflow')}"
    )

    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        serve = await asyncio.create_subprocess_exec(
            jetflow, "serve", cwd=home, env=env, stdout=output, stderr=output
        )
    base = f"http://127.0.0.1:{env['JETFLOW_PORT']}"
    try:
        await until_ready(base, serve, log)
        key = (tmp_path / "data" / "bootstrap-admin-key").read_text().strip()
        async with httpx.AsyncClient(
            base_url=f"{base}/api/v1", headers={"X-API-Key": key}, timeout=10
        ) as admin:
            submitted = await admin.post("/tasks", json={"code": "print('installed')"})
            assert submitted.status_code == 202, submitted.text
            task = submitted.json()
            read = await admin.get(
                f"/tasks/{task['task_id']}", params={"wait_for_seq": task["seq"]}
            )
            assert read.status_code == 200 and read.json()["status"] == "pending"
            # The bundled hardware configs and violation catalogue were read, and seeded.
            configs = await admin.get("/hardware-configs")
            assert configs.status_code == 200 and configs.json()["data"], configs.text
            violations = await admin.get("/violations/")
            assert violations.status_code == 200 and violations.json(), violations.text
        serve.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(serve.wait(), 30) == 0, tail(log)
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()


async def until_ready(base: str, serve: asyncio.subprocess.Process, log: Path) -> None:
    """Ready by its own probe: NATS, the stream, the database and every projection."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=base, timeout=2) as http:
        while time.monotonic() < deadline:
            if serve.returncode is not None:
                raise AssertionError(f"jetflow serve exited {serve.returncode}\n{tail(log)}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/api/v1/health/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"jetflow serve not ready within 60 s\n{tail(log)}")


async def checkout_copy(target: Path) -> Path:
    """The files a commit of the checkout would hold (tracked, and new ones not ignored).

    Built from a copy because setuptools reads a stale ``jetflow.egg-info/SOURCES.txt`` left in
    the checkout (every editable install writes one) and keeps each file listed there: built in
    place, a wheel could carry data that pyproject.toml no longer declares.
    """
    listed = await run(
        "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO
    )
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():  # a deleted file is still listed until it is committed
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]
