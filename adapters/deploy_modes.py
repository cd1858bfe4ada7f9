"""Which deployment modes this machine can run: docker needs a CLI and a daemon that answers,
uv needs its binary, fallback (python -m venv + pip) always works."""

from __future__ import annotations

import asyncio
import shutil
import sys
import sysconfig
from pathlib import Path


def uv_binary() -> str | None:
    beside = Path(sysconfig.get_path("scripts")) / "uv"
    if beside.is_file():
        return str(beside)
    near_python = Path(sys.executable).parent / "uv"
    return str(near_python) if near_python.is_file() else shutil.which("uv")


async def docker_available(timeout_s: float = 5.0) -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    process = await asyncio.create_subprocess_exec(
        docker, "info", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        return await asyncio.wait_for(process.wait(), timeout_s) == 0
    except TimeoutError:
        process.kill()
        await process.wait()
        return False


async def available_modes() -> dict[str, bool]:
    return {"docker": await docker_available(), "uv": uv_binary() is not None, "fallback": True}
