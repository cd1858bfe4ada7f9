"""Use cases of resumable uploads: create, take a chunk, complete, concatenate, terminate, expire.

A chunk is handled in an order that never half-records, whatever the moment of a crash:

1. ``decide`` is asked first, as a dry run on the current state (it is pure), so a wrong offset,
   an expired upload or a body longer than the upload is refused before a byte is written; an
   upload whose length is still deferred then reserves the bytes on their way in its owner's
   storage account (``handlers.storage``), which refuses them past the quota;
2. the body streams to the upload's staged object at the recorded offset (never whole in memory),
   hashed on the way (xxh3-128 for the event, sha1 or xxh3 when the client sent a checksum);
3. ``ChunkReceived`` is appended. If anything before it fails (a checksum mismatch, a body past
   the length, a lost race, a crash) the staged object is truncated back to the recorded offset;
   a crash that left extra bytes is healed by the next chunk, which writes at the recorded offset.

One event per PATCH request: a client that goes away mid-body keeps the bytes that arrived (when
it sent no checksum, which would cover the whole body), so a resumed upload re-sends only the
rest. Completion hashes the staged object, links it into the content-addressed store, appends
``UploadCompleted`` and only then drops the staged object, so a crash in between is completed
again by the next HEAD or PATCH.

Every upload reserves its declared length in its owner's storage account before it is created,
and commits it there once complete. A final upload (concatenation) is decided on its parts'
recorded lengths before a byte is written, recorded, and only then are its parts' blobs streamed
into its staged object, which completes like any other; a crash in between leaves a recorded
final upload that the next HEAD joins again, or the expiry timer gives up.

Staged objects live in this process's data folder, so one process writes an upload at a time;
``_WRITERS`` serialises the requests of one upload inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import xxhash
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid6 import uuid7

from adapters.blob_store import OUT_OF_SPACE, BlobStore
from adapters.envelope import Metadata
from domain.base import DomainError, Gone, Invalid, NotFound, StateConflict
from domain.uploads import (
    UPLOAD,
    CompleteUpload,
    ConcatenateUploads,
    CreateUpload,
    DeclareUploadLength,
    ExpireUpload,
    Part,
    RecordChunk,
    TerminateUpload,
    UploadCreated,
    UploadState,
    UploadStatus,
    check_parts,
)
from handlers import storage
from handlers.commands import CommandContext, CommandService
from projections.uploads import uploads

ChecksumAlgorithm = Literal["sha1", "xxh3"]
CHECKSUM_ALGORITHMS: tuple[ChecksumAlgorithm, ...] = ("sha1", "xxh3")
_NO_DIGEST = "0" * 32


class BodyInterrupted(Exception):
    """The client went away before the request body ended."""


@dataclass(frozen=True)
class Checksum:
    """An ``Upload-Checksum``: sha1, or xxh3 as its 64- or 128-bit digest (told by the length)."""

    algorithm: ChecksumAlgorithm
    digest: bytes

    def hasher(self) -> Any:
        if self.algorithm == "sha1":
            return hashlib.sha1(usedforsecurity=False)
        return xxhash.xxh3_64() if len(self.digest) == 8 else xxhash.xxh3_128()


@dataclass(frozen=True)
class UploadLimits:
    max_size: int
    lifetime_s: float
    quota: int  # bytes one owner's uploads may hold; 0: no quota


@dataclass(frozen=True)
class NewUpload:
    owner: str
    length: int | None
    partial: bool
    metadata: dict[str, str]


class _KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


_WRITERS = _KeyedLocks()
JOINER = CommandContext(Metadata(actor="system:uploads"))
TIMER = CommandContext(Metadata(actor="system:timer"))


def _now() -> datetime:
    return datetime.now(UTC)


async def load(commands: CommandService, upload_id: str, context: CommandContext) -> UploadState:
    """The upload's state from its events (the write side: tus decides on it); another owner's
    upload is reported missing, as the command path does."""
    state: UploadState = (await commands.repository.load(UPLOAD, upload_id))[0]
    scope = context.owner_scope
    if not state.exists or (scope is not None and state.owner != scope):
        raise NotFound("upload_not_found", f"Upload {upload_id} not found")
    return state


def _require_live(state: UploadState) -> None:
    if state.status is UploadStatus.TERMINATED:
        raise Gone("upload_terminated", "The upload was terminated")
    if state.expired_at(_now()):
        raise Gone("upload_expired", "The upload expired before it was finished")


def _expires(now: datetime, limits: UploadLimits) -> datetime | None:
    return now + timedelta(seconds=limits.lifetime_s) if limits.lifetime_s else None


async def _create_reserved(
    commands: CommandService,
    command: CreateUpload | ConcatenateUploads,
    context: CommandContext,
    limits: UploadLimits,
    now: datetime,
) -> None:
    """Record a new upload after reserving its length, which is given back if the upload could
    not be recorded. ``decide`` is asked first as a dry run, so an upload that would be refused
    reserves nothing; it is also where a final upload's length comes from."""
    [created] = UPLOAD.decide(UploadState(), command)
    assert isinstance(created, UploadCreated)
    length = created.length or 0
    await storage.reserve(commands, command.owner, command.upload_id, length, limits.quota, context)
    recorded = False
    try:
        await commands.execute(UPLOAD, command.upload_id, command, context, at=now)
        recorded = True
    finally:
        if not recorded and length:
            await storage.release(commands, command.owner, command.upload_id, context)


async def create_upload(
    commands: CommandService,
    blobs: BlobStore,
    new: NewUpload,
    context: CommandContext,
    limits: UploadLimits,
) -> tuple[str, UploadState]:
    upload_id = uuid7().hex
    now = _now()
    command = CreateUpload(
        upload_id=upload_id,
        owner=new.owner,
        filename=new.metadata.get("filename"),
        file_type=new.metadata.get("file_type") or new.metadata.get("filetype"),
        length=new.length,
        partial=new.partial,
        expires_at=_expires(now, limits),
        metadata=new.metadata,
        max_size=limits.max_size,
    )
    await _create_reserved(commands, command, context, limits, now)
    state = await load(commands, upload_id, context)
    if new.length == 0:
        state = await _complete(commands, blobs, upload_id, context)
    return upload_id, state


async def concatenate(
    commands: CommandService,
    blobs: BlobStore,
    owner: str,
    parts: list[str],
    metadata: dict[str, str],
    context: CommandContext,
    limits: UploadLimits,
) -> tuple[str, UploadState]:
    """Create a final upload from completed partial uploads, then join their bytes into it.

    Nothing is written before every check has passed: the list itself (each part once, a bounded
    number), each part's recorded state, the sum of their recorded lengths against the maximum
    size, and that sum against the owner's storage quota."""
    check_parts(parts)  # before a single part is read
    now = _now()
    facts = []
    for part in parts:
        state = await load(commands, part, context)
        status = UploadStatus.EXPIRED if state.expired_at(now) else state.status
        facts.append(
            Part(upload_id=part, partial=state.partial, status=status, length=state.offset)
        )
    upload_id = uuid7().hex
    command = ConcatenateUploads(
        upload_id=upload_id,
        owner=owner,
        filename=metadata.get("filename"),
        file_type=metadata.get("file_type") or metadata.get("filetype"),
        parts=facts,
        expires_at=_expires(now, limits),
        metadata=metadata,
        max_size=limits.max_size,
    )
    await _create_reserved(commands, command, context, limits, now)
    async with _WRITERS.hold(upload_id):
        return upload_id, await _join(commands, blobs, upload_id, context)


async def _join(
    commands: CommandService, blobs: BlobStore, upload_id: str, context: CommandContext
) -> UploadState:
    """Stream a recorded final upload's parts into its staged object, then complete it.

    Nothing of a join that fails stays (the staged object is removed as it fails). When the
    store is full, the final upload is also terminated and its reservation given back, and the
    ``OSError`` goes on to be answered 507: the client creates the final upload again later.
    After any other failure the final upload stays recorded, to be joined by the next HEAD or
    given up by the expiry timer."""
    state = await load(commands, upload_id, context)
    digests = []
    for part in state.parts:
        joined: UploadState = (await commands.repository.load(UPLOAD, part))[0]
        assert joined.xxh3 is not None  # completed when the final was decided, and stays so
        digests.append(joined.xxh3)
    try:
        await asyncio.to_thread(blobs.compose_staged, upload_id, digests)
    except OSError as error:
        if error.errno in OUT_OF_SPACE:
            await commands.execute(UPLOAD, upload_id, TerminateUpload(upload_id=upload_id), JOINER)
            await storage.release(commands, _owner(state), upload_id, JOINER)
        raise
    return await _complete(commands, blobs, upload_id, context)


def _owner(state: UploadState) -> str:
    assert state.owner is not None  # every created upload records its owner
    return state.owner


async def current(
    commands: CommandService, blobs: BlobStore, upload_id: str, context: CommandContext
) -> UploadState:
    """The authoritative state for HEAD; completes an upload whose completion a crash cut off."""
    state = await load(commands, upload_id, context)
    _require_live(state)
    if _due(state):
        async with _WRITERS.hold(upload_id):
            state = await load(commands, upload_id, context)
            if _due(state):
                finish = _join if state.parts else _complete
                state = await finish(commands, blobs, upload_id, context)
    return state


def _due(state: UploadState) -> bool:
    """Unfinished, yet all its bytes are there: a final upload's are its parts'."""
    return state.status is UploadStatus.UPLOADING and (
        bool(state.parts) or (state.length is not None and state.offset == state.length)
    )


async def receive_chunk(
    commands: CommandService,
    blobs: BlobStore,
    upload_id: str,
    offset: int,
    body: AsyncIterable[bytes],
    context: CommandContext,
    *,
    content_length: int | None,
    upload_length: int | None,
    checksum: Checksum | None,
    limits: UploadLimits,
) -> UploadState:
    async with _WRITERS.hold(upload_id):
        state = await load(commands, upload_id, context)
        _require_live(state)
        if state.parts:
            raise StateConflict("upload_is_final", "A final upload takes no bytes of its own")
        if _due(state):  # a crash cut off the completion
            state = await _complete(commands, blobs, upload_id, context)
        now = _now()
        declare = None
        if upload_length is not None and state.length is None:
            declare = DeclareUploadLength(
                upload_id=upload_id, length=upload_length, max_size=limits.max_size, at=now
            )
            state = UPLOAD.fold(UPLOAD.decide(state, declare), state)
        if content_length == 0:  # only declares a length, or probes
            if offset != state.offset:
                raise StateConflict(
                    "upload_offset_mismatch", f"The upload is at offset {state.offset}"
                )
        else:
            # Dry run (decide is pure): refuse a wrong offset or a too long body before reading.
            probe = RecordChunk(
                upload_id=upload_id, offset=offset, length=content_length or 1,
                xxh3=_NO_DIGEST, at=now,
            )  # fmt: skip
            UPLOAD.decide(state, probe)
        owner = _owner(state)
        if declare is not None:
            await storage.reserve(commands, owner, upload_id, declare.length, limits.quota, context)
        reserved = None
        if state.length is None and content_length != 0:
            # A deferred upload holds what it received and the body on its way; a body of no
            # told length may take what the maximum size and the quota leave it.
            most = limits.max_size - offset
            body_length = (
                min(content_length, most)
                if content_length is not None
                else await _room(commands, owner, upload_id, offset, limits)
            )
            reserved = offset + body_length
            await storage.reserve(commands, owner, upload_id, reserved, limits.quota, context)
        if state.length is not None:
            room = state.length - offset
        elif reserved is not None:
            room = reserved - offset
        else:
            room = limits.max_size - offset
        chunk_hash = xxhash.xxh3_128()
        check = checksum.hasher() if checksum else None
        received = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal received
            async for chunk in body:
                if received + len(chunk) > room:
                    raise Invalid(
                        "upload_exceeds_length",
                        f"The body goes past the upload's length ({offset + room} bytes)",
                    )
                chunk_hash.update(chunk)
                if check is not None:
                    check.update(chunk)
                yield chunk
                received += len(chunk)  # counted once written
                commands.metrics.upload_received(len(chunk))

        recorded = False
        try:
            try:
                await blobs.write_staged(upload_id, offset, counted())
            except BodyInterrupted:
                if checksum is not None or received == 0:
                    raise
            else:
                if checksum and check and not hmac.compare_digest(check.digest(), checksum.digest):
                    raise DomainError(
                        "checksum_mismatch", f"The body's {checksum.algorithm} checksum differs"
                    )
            if declare is not None:
                await commands.execute(UPLOAD, upload_id, declare, context, at=now)
            if received:
                chunk = RecordChunk(
                    upload_id=upload_id, offset=offset, length=received,
                    xxh3=chunk_hash.hexdigest(), at=_now(),
                )  # fmt: skip
                await commands.execute(UPLOAD, upload_id, chunk, context, at=chunk.at)
            recorded = True
        finally:
            commands.metrics.upload_settled(received)
            if not recorded:
                blobs.truncate_staged(upload_id, offset)
        if reserved is not None and reserved != offset + received:  # hold what came, no more
            await storage.reserve(
                commands, owner, upload_id, offset + received, limits.quota, context
            )
        state = await load(commands, upload_id, context)
        if _due(state):
            state = await _complete(commands, blobs, upload_id, context)
        return state


async def _complete(
    commands: CommandService, blobs: BlobStore, upload_id: str, context: CommandContext
) -> UploadState:
    stored = await asyncio.to_thread(blobs.commit_staged, upload_id)
    command = CompleteUpload(upload_id=upload_id, length=stored.size, xxh3=stored.digest, at=_now())
    await commands.execute(UPLOAD, upload_id, command, context, at=command.at)
    blobs.discard_staged(upload_id)
    state = await load(commands, upload_id, context)
    await storage.commit(commands, _owner(state), upload_id, stored.size, context)
    return state


async def _room(
    commands: CommandService, owner: str, upload_id: str, offset: int, limits: UploadLimits
) -> int:
    """How many more bytes a deferred upload at ``offset`` may take: the maximum size bounds
    it, and so does its owner's quota if there is one."""
    room = (await storage.account(commands, owner)).room(upload_id, limits.quota)
    most = limits.max_size - offset
    return most if room is None else max(0, min(most, room - offset))


async def terminate(
    commands: CommandService, blobs: BlobStore, upload_id: str, context: CommandContext
) -> None:
    """Forget an upload; a completed upload's blob stays (another upload may share it), so its
    bytes stay counted as stored, while an unfinished one's reservation is given back."""
    async with _WRITERS.hold(upload_id):
        await commands.execute(UPLOAD, upload_id, TerminateUpload(upload_id=upload_id), context)
        blobs.discard_staged(upload_id)
        state: UploadState = (await commands.repository.load(UPLOAD, upload_id))[0]
        if state.xxh3 is None:
            await storage.release(commands, _owner(state), upload_id, context)


async def expire_uploads(
    commands: CommandService,
    sessions: async_sessionmaker[AsyncSession],
    blobs: BlobStore,
    now: datetime,
) -> int:
    """Record the expiry of unfinished uploads past their lifetime, drop their bytes and give
    their reservations back."""
    async with sessions() as session:
        stale = (
            await session.scalars(
                select(uploads.c.upload_id).where(
                    uploads.c.status == UploadStatus.UPLOADING.value, uploads.c.expires_at <= now
                )
            )
        ).all()
    expired = await commands.execute_each(
        UPLOAD,
        ((upload_id, ExpireUpload(upload_id=upload_id, at=now)) for upload_id in stale),
        TIMER,
        at=now,
    )
    for upload_id in stale:
        state: UploadState = (await commands.repository.load(UPLOAD, upload_id))[0]
        if state.status is UploadStatus.EXPIRED:
            blobs.discard_staged(upload_id)
            await storage.release(commands, _owner(state), upload_id, TIMER)
    return expired
