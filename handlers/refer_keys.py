"""Refer keys: the rotation timer, explicit re-issue, downloads by key and their holders.

The timer reads the files projection only to find keys that are due; each command it sends names
the key generation it saw, so the file aggregate refuses a stale or early one (another instance,
a lagging projection) instead of rotating twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.envelope import Metadata
from adapters.sql import as_utc
from domain.base import Command
from domain.files import (
    FILE,
    ExpireReferKey,
    FileId,
    IssueReferKey,
    ReleaseHolder,
    RotateReferKey,
    UseReferKey,
)
from handlers.commands import CommandContext, CommandService
from handlers.files import new_refer_key
from handlers.outcome import CommandOutcome
from projections.files import files, refer_keys

ROTATOR = CommandContext(Metadata(actor="system:refer-keys"))


def _now() -> datetime:
    return datetime.now(UTC)


def _advance(
    file_id: str, generation: int, ends_at: datetime, now: datetime, rotate_s: float
) -> Command:
    if now >= as_utc(ends_at):
        return ExpireReferKey(file_id=file_id, generation=generation, at=now)
    return RotateReferKey(
        file_id=file_id,
        generation=generation,
        refer_key=new_refer_key(),
        rotate_s=rotate_s,
        at=now,
    )


async def advance_refer_keys(
    commands: CommandService,
    sessions: async_sessionmaker[AsyncSession],
    now: datetime,
    rotate_s: float,
) -> int:
    """Rotate live keys that are due, and expire chains that ran their course."""
    async with sessions() as session:
        due = (
            await session.execute(
                select(files.c.file_id, files.c.refer_generation, files.c.refer_ends_at).where(
                    or_(
                        (files.c.refer_state == "live") & (files.c.refer_rotates_at <= now),
                        (files.c.refer_state == "consumed") & (files.c.refer_ends_at <= now),
                    )
                )
            )
        ).all()
    return await commands.execute_each(
        FILE,
        ((f, _advance(f, gen, ends_at, now, rotate_s)) for f, gen, ends_at in due),
        ROTATOR,
        at=now,
    )


async def issue_refer_key(
    commands: CommandService,
    file_id: FileId,
    context: CommandContext,
    *,
    rotate_s: float,
    max_s: float,
) -> CommandOutcome:
    now = _now()
    command = IssueReferKey(
        file_id=file_id, refer_key=new_refer_key(), rotate_s=rotate_s, max_s=max_s, at=now
    )
    return await commands.execute(FILE, file_id, command, context, at=now)


async def file_of_key(sessions: async_sessionmaker[AsyncSession], refer_key: str) -> str | None:
    async with sessions() as session:
        file_id = await session.scalar(
            select(refer_keys.c.file_id).where(refer_keys.c.refer_key == refer_key)
        )
    return str(file_id) if file_id is not None else None


async def use_refer_key(
    commands: CommandService,
    file_id: str,
    refer_key: str,
    user: str,
    context: CommandContext,
    *,
    max_holders: int,
) -> CommandOutcome:
    """Let ``user`` download by ``refer_key``; the first download stops the rotation."""
    now = _now()
    command = UseReferKey(
        file_id=file_id, refer_key=refer_key, user=user, max_holders=max_holders, at=now
    )
    return await commands.execute(FILE, file_id, command, context, at=now)


async def release_holder(
    commands: CommandService, file_id: FileId, user: str, context: CommandContext
) -> CommandOutcome:
    return await commands.execute(FILE, file_id, ReleaseHolder(file_id=file_id, user=user), context)
