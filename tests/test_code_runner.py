"""The worker's sandbox runs real subprocesses under the task's limits (in bubblewrap, which
./dev installs)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import psutil
import pytest

from adapters.code_runner import RunLimits, run_python
from adapters.sandbox import Bubblewrap

QUICK = RunLimits(timeout_s=10)
SANDBOX = Bubblewrap()


async def test_output_of_a_successful_run() -> None:
    outcome = await run_python("print('hello')", QUICK, SANDBOX)
    assert outcome.succeeded
    assert outcome.stdout == "hello\n"
    assert outcome.error is None


async def test_exit_code_and_exception_are_reported() -> None:
    exited = await run_python("raise SystemExit(3)", QUICK, SANDBOX)
    assert not exited.succeeded
    assert exited.exit_code == 3
    assert "exit code 3" in (exited.error or "")
    crashed = await run_python("1 / 0", QUICK, SANDBOX)
    assert "Traceback" in crashed.stderr
    assert crashed.error is not None and "ZeroDivisionError" in crashed.error


async def test_timeout_kills_the_whole_process_group() -> None:
    marker = uuid.uuid4().hex
    code = (
        "import subprocess, sys, time\n"
        f"sleeper = 'import time; time.sleep(60)  # {marker}'\n"
        "child = subprocess.Popen([sys.executable, '-c', sleeper])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    outcome = await run_python(code, RunLimits(timeout_s=1.0), SANDBOX)
    assert time.monotonic() - started < 5
    assert outcome.timed_out
    assert "timed out" in (outcome.error or "")
    # The printed pid is the grandchild's in the sandbox's own pid namespace; on the host it is
    # found by its command line.
    await asyncio.sleep(0.1)
    assert not [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if marker in " ".join(p.info["cmdline"] or ()) and p.info["status"] != "zombie"
    ]


async def test_memory_limit_stops_a_large_allocation() -> None:
    outcome = await run_python(
        "x = bytearray(2 * 1024**3)", RunLimits(timeout_s=10, memory_mb=256), SANDBOX
    )
    assert not outcome.succeeded
    assert "MemoryError" in outcome.stderr or outcome.exit_code == -9


async def test_output_is_capped() -> None:
    outcome = await run_python("print('x' * 10_000_000)", QUICK, SANDBOX, max_output_bytes=1000)
    assert outcome.succeeded
    assert len(outcome.stdout) < 1100
    assert outcome.stdout.endswith("[truncated]")


async def test_runs_in_a_throwaway_directory_without_our_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JETFLOW_SECRET", "s3cret")
    outcome = await run_python(
        "import os; print(os.getcwd()); print(os.environ.get('JETFLOW_SECRET'))", QUICK, SANDBOX
    )
    workdir, secret = outcome.stdout.split()
    assert secret == "None"
    assert "jetflow-task-" in workdir
    assert not await asyncio.to_thread(Path(workdir).exists)
