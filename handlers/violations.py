"""The violation catalogue: loaded from a CSV file (``code,name,description``) and edited singly.

Loading is idempotent: one ``LoadViolations`` command records only the entries that are missing
or changed. At start-up the bundled file seeds a catalogue that has never had an entry.
"""

from __future__ import annotations

import csv
from pathlib import Path

from adapters.envelope import Metadata
from domain.violations import (
    CATALOGUE_ID,
    VIOLATIONS,
    AddViolation,
    ChangeViolation,
    LoadViolations,
    RemoveViolation,
    ViolationEntry,
)
from handlers.commands import CommandContext, CommandService
from handlers.outcome import CommandOutcome
from jetflow_defaults import bundled

DEFAULT_VIOLATIONS_FILE = bundled("violations.csv")
LOADER = CommandContext(Metadata(actor="system:load-violations"))


def read_violations(path: Path) -> list[ViolationEntry]:
    """Entries of a CSV file with a ``code,name,description`` header (UTF-8, BOM tolerated)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return [
            ViolationEntry(
                code=row["code"].strip(),
                name=row["name"],
                description=row.get("description") or "",
            )
            for row in csv.DictReader(handle)
            if row.get("code", "").strip()
        ]


async def load_violations(
    commands: CommandService, path: Path | None = None, context: CommandContext = LOADER
) -> CommandOutcome:
    entries = read_violations(path or DEFAULT_VIOLATIONS_FILE)
    return await commands.execute(
        VIOLATIONS, CATALOGUE_ID, LoadViolations(entries=entries), context
    )


async def seed_violations(commands: CommandService, path: Path | None = None) -> None:
    """Load the file only into a catalogue that has no events yet (an emptied one stays empty)."""
    _, version = await commands.repository.load(VIOLATIONS, CATALOGUE_ID)
    if version == 0:
        await load_violations(commands, path)


async def add_violation(
    commands: CommandService, entry: ViolationEntry, context: CommandContext
) -> CommandOutcome:
    return await commands.execute(VIOLATIONS, CATALOGUE_ID, AddViolation(entry=entry), context)


async def change_violation(
    commands: CommandService, entry: ViolationEntry, context: CommandContext
) -> CommandOutcome:
    return await commands.execute(VIOLATIONS, CATALOGUE_ID, ChangeViolation(entry=entry), context)


async def remove_violation(
    commands: CommandService, code: str, context: CommandContext
) -> CommandOutcome:
    return await commands.execute(VIOLATIONS, CATALOGUE_ID, RemoveViolation(code=code), context)
