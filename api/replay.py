"""``jetflow replay``: rebuild every projection from the event stream."""

from __future__ import annotations

import sys
import time

from api.runtime import PROJECTIONS, Runtime
from api.settings import Settings
from handlers.projector import rebuild


async def replay_all(settings: Settings) -> int:
    runtime = Runtime(settings)
    await runtime.open()
    try:
        for projection in PROJECTIONS:
            started = time.perf_counter()

            def report(
                applied: int, seq: int, name: str = projection.name, since: float = started
            ) -> None:
                rate = applied / max(time.perf_counter() - since, 1e-9)
                print(f"\r{name}: {applied} events (seq {seq}), {rate:,.0f} events/s", end="")
                sys.stdout.flush()

            total = await rebuild(
                runtime.store, runtime.engine, runtime.sessions, projection, report
            )
            elapsed = time.perf_counter() - started
            print(f"\r{projection.name}: rebuilt from {total} events in {elapsed:.2f} s")
    finally:
        await runtime.stop()
    return 0
