"""Run submitted Python code in a separate, limited process: the worker's sandbox.

Limits are applied in the child before ``exec`` (address space, CPU seconds, CPU affinity) and the
wall-clock timeout is enforced by the parent, which kills the child's whole process group so code
that forks cannot outlive its task. Output is read incrementally and capped, never held whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import signal
import sys
import tempfile
import time
from dataclasses import dataclass

TRUNCATED = "\n…[truncated]"
# CPython needs roughly 30 MiB of address space to start; below this the limit is not applied.
MEMORY_FLOOR_MB = 64


@dataclass(frozen=True)
class RunLimits:
    timeout_s: float
    cpu: float = 1.0
    memory_mb: int = 512


@dataclass(frozen=True)
class RunOutcome:
    succeeded: bool
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float

    @property
    def error(self) -> str | None:
        if self.succeeded:
            return None
        if self.timed_out:
            return f"timed out after {self.duration_s:.1f} s"
        if self.exit_code is not None and self.exit_code < 0:
            hint = " (memory limit?)" if -self.exit_code == signal.SIGKILL else ""
            return f"killed by signal {-self.exit_code}{hint}"
        last = next((line for line in reversed(self.stderr.splitlines()) if line.strip()), "")
        return f"exit code {self.exit_code}: {last}" if last else f"exit code {self.exit_code}"


def _limit_child(limits: RunLimits) -> None:
    """Runs in the child between fork and exec; it must not touch the event loop."""
    memory = max(limits.memory_mb, MEMORY_FLOOR_MB) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu_seconds = math.ceil(limits.timeout_s) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    allowed = sorted(os.sched_getaffinity(0))
    cores = max(1, min(len(allowed), math.ceil(limits.cpu)))
    os.sched_setaffinity(0, allowed[:cores])


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> str:
    kept = bytearray()
    overflow = False
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        if room > 0:
            kept.extend(chunk[:room])
        overflow = overflow or len(chunk) > room
    text = kept.decode("utf-8", errors="replace")
    return text + TRUNCATED if overflow else text


async def run_python(code: str, limits: RunLimits, *, max_output_bytes: int = 65536) -> RunOutcome:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="jetflow-task-") as workdir:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-c",
            code,
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=lambda: _limit_child(limits),
        )
        assert process.stdout is not None and process.stderr is not None
        readers = asyncio.gather(
            _read_capped(process.stdout, max_output_bytes),
            _read_capped(process.stderr, max_output_bytes),
        )
        timed_out = False
        try:
            await asyncio.wait_for(process.wait(), limits.timeout_s)
        except TimeoutError:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # orphans the task left behind
        stdout, stderr = await readers
    return RunOutcome(
        succeeded=not timed_out and process.returncode == 0,
        exit_code=process.returncode,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        duration_s=time.monotonic() - started,
    )
