"""Use cases of the owners' storage accounts: reserve an upload's bytes against the quota before
it may take them, record them stored when it completes, give them back when it ends unfinished.

A reservation comes before the upload's own event, so a crash between the two leaves bytes
reserved for an upload that does not exist. Such leftovers (and a commit or release a crash cut
off) are settled from the uploads' own events when they would stand in a reservation's way:
the refused reservation is tried once more after the account has been reconciled.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.envelope import Metadata
from domain.base import Command, StateConflict
from domain.storage import (
    QUOTA_EXCEEDED,
    STORAGE,
    AccountState,
    CommitStorage,
    ReclaimStorage,
    ReleaseStorage,
    ReserveStorage,
    account_id,
)
from domain.uploads import UPLOAD, UploadState, UploadStatus
from handlers.commands import CommandContext, CommandService

# Longer than any request takes between reserving its bytes and recording its upload.
RESERVATION_GRACE = timedelta(seconds=60)
RECONCILER = CommandContext(Metadata(actor="system:storage"))


def _now() -> datetime:
    return datetime.now(UTC)


def _as(context: CommandContext) -> CommandContext:
    """The sender's name on the account's events, but not its Idempotency-Key (a resend would be
    handed the reservation of the first send's upload) nor its owner scope (the account is
    chosen from an upload the sender was already allowed to act on)."""
    return CommandContext(context.metadata)


async def account(commands: CommandService, owner: str) -> AccountState:
    state: AccountState = (await commands.repository.load(STORAGE, account_id(owner)))[0]
    return state


async def reserve(
    commands: CommandService,
    owner: str,
    upload_id: str,
    length: int,
    quota: int,
    context: CommandContext,
) -> None:
    """Let ``upload_id`` hold ``length`` bytes of ``owner``'s quota (413 if they do not fit)."""
    command = ReserveStorage(
        owner=owner, upload_id=upload_id, length=length, quota=quota, at=_now()
    )
    try:
        await commands.execute(STORAGE, account_id(owner), command, _as(context))
    except StateConflict as refused:
        if refused.code != QUOTA_EXCEEDED or not await _reconcile(commands, owner, upload_id):
            raise
        retry = command.model_copy(update={"at": _now()})
        await commands.execute(STORAGE, account_id(owner), retry, _as(context))


async def commit(
    commands: CommandService, owner: str, upload_id: str, length: int, context: CommandContext
) -> None:
    command = CommitStorage(upload_id=upload_id, length=length)
    await commands.execute(STORAGE, account_id(owner), command, _as(context))


async def release(
    commands: CommandService, owner: str, upload_id: str, context: CommandContext
) -> None:
    command = ReleaseStorage(upload_id=upload_id)
    await commands.execute(STORAGE, account_id(owner), command, _as(context))


async def _reconcile(commands: CommandService, owner: str, keep: str) -> bool:
    """Settle the account's reservations (but ``keep``'s) whose upload has moved on; True if
    any was. Each upload's state is read from its events, never from a projection."""
    cutoff = _now() - RESERVATION_GRACE
    due: list[tuple[str, Command]] = []
    for upload_id in (await account(commands, owner)).in_flight:
        if upload_id == keep:
            continue
        upload: UploadState = (await commands.repository.load(UPLOAD, upload_id))[0]
        settled = _settlement(upload_id, upload, cutoff)
        if settled is not None:
            due.append((account_id(owner), settled))
    return await commands.execute_each(STORAGE, due, RECONCILER) > 0


def _settlement(upload_id: str, upload: UploadState, cutoff: datetime) -> Command | None:
    if not upload.exists:
        return ReclaimStorage(upload_id=upload_id, reserved_before=cutoff)
    if upload.xxh3 is not None:  # it completed (and may have been terminated since)
        return CommitStorage(upload_id=upload_id, length=upload.offset)
    if upload.status in (UploadStatus.TERMINATED, UploadStatus.EXPIRED):
        return ReleaseStorage(upload_id=upload_id)
    return None
