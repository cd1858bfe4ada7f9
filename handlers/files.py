"""Use cases of files, and the process manager that turns finished uploads into stored files.

The upload aggregate knows nothing of files: this process manager watches its events and answers
with file commands. A regular (or final) upload becomes a ``pending`` file when created; when it
completes, the file is ``processing``, claims its content (the first claimer of a digest stores a
new asset, later ones refer to it) and is ``ready`` with its first refer key. An upload that is
terminated or expires unfinished leaves its file in ``error``. Partial uploads are pieces of a
parallel upload, not files, and are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as random_tokens
from datetime import UTC, datetime
from typing import Annotated

from nats.aio.msg import Msg
from pydantic import Field, StringConstraints

from adapters.blob_store import LocalBlobStore
from adapters.envelope import Metadata, RecordedEvent, events_of, to_domain
from adapters.event_store import JetStreamEventStore
from domain.base import DomainError, Invalid
from domain.contents import CONTENT, ClaimContent
from domain.files import (
    FILE,
    AddComment,
    AuthorKind,
    CategoryCode,
    FailFile,
    FileId,
    RegisterFile,
    SaveRecommendation,
    Severity,
    StartProcessing,
    StoreFile,
    Text,
    storage_path,
)
from domain.uploads import UPLOAD, UploadCompleted, UploadCreated, UploadExpired, UploadTerminated
from domain.violations import CATALOGUE_ID, VIOLATIONS
from handlers.commands import CommandContext, CommandService
from handlers.consumer import consume, ensure_durable
from handlers.outcome import CommandOutcome
from handlers.wire import WireModel

log = logging.getLogger(__name__)
FILE_TRACKER = "pm-files"
TRACKER = CommandContext(Metadata(actor="system:files"))


class CheckHashesRequest(WireModel):
    hashes: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=128)]],
        Field(min_length=1, max_length=1000),
    ]


class CommentRequest(WireModel):
    author_kind: AuthorKind
    author: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    text: Text
    violation_severity: Severity = "none"
    violation_categories: list[CategoryCode] = []


class RecommendationRequest(WireModel):
    text: Text
    violation_severity: Severity = "none"
    violation_categories: list[CategoryCode] = []
    user_comment: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    analyser_comment: Annotated[str, StringConstraints(max_length=10_000)] | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def new_refer_key() -> str:
    return random_tokens.token_urlsafe(24)


def new_asset_id() -> str:
    return f"asset_{random_tokens.token_hex(8)}"


async def claim_content(
    commands: CommandService, file_id: str, xxh3: str, size: int
) -> tuple[str, bool]:
    """Claim the digest for this file: the asset id, and whether it was stored before."""
    claim = ClaimContent(xxh3=xxh3, file_id=file_id, size=size, asset_id=new_asset_id())
    await commands.execute(CONTENT, xxh3, claim, TRACKER)
    content, _ = await commands.repository.load(CONTENT, xxh3)
    assert content.asset_id is not None  # the claim above stored or referenced it
    return content.asset_id, content.owner != file_id


async def store_completed(
    commands: CommandService,
    blobs: LocalBlobStore,
    completed: UploadCompleted,
    *,
    rotate_s: float,
    max_s: float,
) -> None:
    file_id = completed.upload_id
    now = _now()
    start = StartProcessing(file_id=file_id, length=completed.length, xxh3=completed.xxh3, at=now)
    await commands.execute(FILE, file_id, start, TRACKER, at=now)
    if not blobs.exists(completed.xxh3):
        reason = f"the completed upload's bytes ({completed.xxh3}) are not in the blob store"
        await commands.execute(
            FILE, file_id, FailFile(file_id=file_id, reason=reason, at=now), TRACKER
        )
        return
    asset_id, deduplicated = await claim_content(
        commands, file_id, completed.xxh3, completed.length
    )
    now = _now()
    store = StoreFile(
        file_id=file_id,
        asset_id=asset_id,
        storage_path=storage_path(completed.xxh3),
        deduplicated=deduplicated,
        refer_key=new_refer_key(),
        rotate_s=rotate_s,
        max_s=max_s,
        at=now,
    )
    await commands.execute(FILE, file_id, store, TRACKER, at=now)


async def follow_upload(
    commands: CommandService,
    blobs: LocalBlobStore,
    recorded: RecordedEvent,
    *,
    rotate_s: float,
    max_s: float,
) -> None:
    """Answer one upload event with the file commands it calls for."""
    event = to_domain(UPLOAD, recorded)
    now = _now()
    match event:
        case UploadCreated(partial=False):
            register = RegisterFile(
                file_id=event.upload_id,
                owner=event.owner,
                filename=event.filename,
                file_type=event.file_type,
                length=event.length,
                metadata=event.metadata,
                at=now,
            )
            await commands.execute(FILE, event.upload_id, register, TRACKER, at=now)
        case UploadCompleted(partial=False):
            await store_completed(commands, blobs, event, rotate_s=rotate_s, max_s=max_s)
        case UploadTerminated() | UploadExpired():
            how = "terminated" if isinstance(event, UploadTerminated) else "expired"
            fail = FailFile(file_id=event.upload_id, reason=f"upload {how} unfinished", at=now)
            await commands.execute(FILE, event.upload_id, fail, TRACKER, at=now)


async def start_file_tracker(
    store: JetStreamEventStore,
    commands: CommandService,
    blobs: LocalBlobStore,
    *,
    rotate_s: float,
    max_s: float,
) -> asyncio.Task[None]:
    """Follow every upload's lifecycle with its file's, in stream order."""
    await ensure_durable(store.js, store.stream, FILE_TRACKER, events_of(UPLOAD))

    async def handle(msgs: list[Msg]) -> None:
        for msg in msgs:
            recorded = store.decode(msg)
            try:
                await follow_upload(commands, blobs, recorded, rotate_s=rotate_s, max_s=max_s)
            except DomainError as refused:
                # A partial upload's end, or a file that already moved on: nothing to do.
                log.debug("file of upload %s refused: %s", recorded.aggregate_id, refused)
            await msg.ack()

    return asyncio.create_task(
        consume(store.js, store.stream, FILE_TRACKER, handle, batch_size=1), name=FILE_TRACKER
    )


async def _check_categories(commands: CommandService, codes: list[str]) -> None:
    """Codes must be in the catalogue; read from its events, so a code added a moment ago counts."""
    catalogue, _ = await commands.repository.load(VIOLATIONS, CATALOGUE_ID)
    unknown = sorted(set(codes) - catalogue.codes)
    if unknown:
        raise Invalid(
            "unknown_violation_category",
            f"Not in the violation catalogue: {', '.join(unknown)}",
            field="violation_categories",
        )


async def add_comment(
    commands: CommandService, file_id: FileId, request: CommentRequest, context: CommandContext
) -> CommandOutcome:
    await _check_categories(commands, request.violation_categories)
    now = _now()
    command = AddComment(
        file_id=file_id,
        comment_id=f"c_{random_tokens.token_hex(8)}",
        author_kind=request.author_kind,
        author=request.author,
        text=request.text,
        severity=request.violation_severity,
        categories=request.violation_categories,
        at=now,
    )
    return await commands.execute(FILE, file_id, command, context, at=now)


async def save_recommendation(
    commands: CommandService,
    file_id: FileId,
    request: RecommendationRequest,
    context: CommandContext,
) -> CommandOutcome:
    await _check_categories(commands, request.violation_categories)
    now = _now()
    command = SaveRecommendation(
        file_id=file_id,
        text=request.text,
        severity=request.violation_severity,
        categories=request.violation_categories,
        user_comment=request.user_comment,
        analyser_comment=request.analyser_comment,
        at=now,
    )
    return await commands.execute(FILE, file_id, command, context, at=now)
