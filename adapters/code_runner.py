"""Run submitted Python code in a sandbox (``adapters.sandbox``) under a run's caps.

The wall-clock timeout is enforced here: the child's whole process group is killed, and a
sandboxed run's pid namespace goes with it, so code that forks cannot outlive its task. Output is
read incrementally and capped, never held whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass

from adapters.sandbox import RunLimits, Sandbox

TRUNCATED = "\n…[truncated]"

__all__ = ["RunLimits", "RunOutcome", "run_python"]


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


async def run_python(
    code: str, limits: RunLimits, sandbox: Sandbox, *, max_output_bytes: int = 65536
) -> RunOutcome:
    started = time.monotonic()
    with sandbox.launch(code, limits) as launch:
        process = await asyncio.create_subprocess_exec(
            *launch.argv,
            cwd=launch.cwd,
            env=launch.env,
            pass_fds=launch.pass_fds,
            user=launch.user,
            group=launch.user,
            extra_groups=[] if launch.user is not None else None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=launch.preexec,
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
