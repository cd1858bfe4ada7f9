"""Helpers every benchmark shares: the machine's load next to each figure, and one JSON line
that `bench/run_all.py` reads back, so the human-readable output can change freely."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "


def load_average() -> tuple[float, float, float]:
    """The 1/5/15-minute load averages: the machine is shared, so a reader needs them to judge."""
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def emit(name: str, figures: dict[str, Any]) -> None:
    """Print one machine-readable line of figures (with the load at the time) for run_all."""
    print(RESULT_PREFIX + json.dumps({"name": name, "load": load_average(), **figures}))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@contextlib.contextmanager
def profiled(path: str | None, rate: int = 250) -> Iterator[None]:
    """Sample this process with py-spy (collapsed stacks) while the block runs, so a profile
    covers only the phase being measured; no-op when ``path`` is None. Every thread is sampled,
    unless BENCH_PYSPY_GIL=1 asks for the GIL holder only: py-spy counts threads blocked in
    C (aiosqlite's workers, executor workers) as busy, which the GIL view leaves out."""
    if path is None:
        yield
        return
    spy = Path(sys.executable).parent / "py-spy"
    command = [str(spy), "record", "--pid", str(os.getpid()), "--format", "raw", "-r", str(rate)]
    if os.environ.get("BENCH_PYSPY_GIL") == "1":
        command.append("--gil")
    recorder = subprocess.Popen([*command, "-o", path], stdout=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy needs a moment to attach before the phase starts
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)
