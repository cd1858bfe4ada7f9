"""``jetflow load-violations``: record a CSV file's entries in the violation catalogue."""

from __future__ import annotations

from pathlib import Path

from api.settings import Settings


async def load_violations_file(settings: Settings, path: Path | None) -> int:
    """``jetflow load-violations``: define what the file has and the catalogue lacks."""
    from api.runtime import Runtime
    from handlers.violations import load_violations
    from slices.catalogue import CATALOGUE

    runtime = Runtime(settings, CATALOGUE)
    await runtime.open()
    try:
        outcome = await load_violations(runtime.commands, path or settings.violations_file)
    finally:
        await runtime.stop()
    print(f"violation catalogue: {len(outcome.events)} entries defined or changed")
    return 0
