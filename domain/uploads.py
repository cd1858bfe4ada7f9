"""Resumable uploads (the tus 1.0.0 protocol): an upload's length, offset and lifecycle.

An upload is created with a length (or a promise to declare it later), receives its bytes in
chunks, each recorded at the offset where the previous one ended, and ends ``completed`` once the
offset reaches the length (the bytes are then in the content-addressed blob store), or
``terminated`` by its client, or ``expired`` when its lifetime ran out unfinished.

The offset invariant lives here: a chunk is accepted only at the recorded offset, so of two racing
PATCH requests at the same offset one is refused, and the event store's expected-sequence check
orders two processes deciding at once. The bytes themselves never enter an event; a chunk event
carries its offset, length and xxh3-128 digest.

Concatenation (tus ``Upload-Concat``): *partial* uploads are ordinary uploads flagged ``partial``;
a *final* upload is decided from its completed parts' recorded lengths before a byte of it exists
(each part once, at most ``MAX_PARTS``, their sum within the maximum size), is created with that
length, and completes once its parts' bytes have been joined into its own blob.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from domain.base import (
    AGGREGATE_ID_PATTERN,
    Aggregate,
    Command,
    Event,
    Gone,
    Instant,
    Invalid,
    NotFound,
    StateConflict,
)

UploadId = Annotated[str, StringConstraints(pattern=AGGREGATE_ID_PATTERN)]
Length = Annotated[int, Field(ge=0)]
Digest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
MetadataText = Annotated[str, StringConstraints(max_length=4096)]
# The most partial uploads one final upload joins (tus sets no bound; a list this long is already
# far beyond what parallel clients send).
MAX_PARTS = 1000


class UploadStatus(StrEnum):
    UPLOADING = "uploading"
    COMPLETED = "completed"
    TERMINATED = "terminated"
    EXPIRED = "expired"


# ---------------------------------------------------------------- commands


class CreateUpload(Command):
    upload_id: UploadId
    owner: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    filename: MetadataText | None = None
    file_type: MetadataText | None = None
    length: Length | None  # None: the client declares it later (Upload-Defer-Length)
    partial: bool = False
    expires_at: datetime | None
    metadata: dict[str, MetadataText] = {}
    max_size: Annotated[int, Field(gt=0)]


class RecordChunk(Command):
    upload_id: UploadId
    offset: Length
    length: Annotated[int, Field(gt=0)]
    xxh3: Digest
    at: Instant


class DeclareUploadLength(Command):
    upload_id: UploadId
    length: Length
    max_size: Annotated[int, Field(gt=0)]
    at: Instant


class CompleteUpload(Command):
    upload_id: UploadId
    length: Length
    xxh3: Digest
    at: Instant


class Part(BaseModel):
    """What a final upload is decided on about one of its parts: that part's recorded state (the
    parts are other aggregates, so the caller reads them from their events)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    upload_id: UploadId
    partial: bool
    status: UploadStatus  # ``expired`` once past its lifetime, even before the timer records it
    length: Length  # the bytes it holds: its recorded offset


class ConcatenateUploads(Command):
    """Create a final upload from completed partial uploads, before their bytes are joined."""

    upload_id: UploadId
    owner: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    filename: MetadataText | None = None
    file_type: MetadataText | None = None
    parts: Annotated[list[Part], Field(min_length=1)]
    expires_at: datetime | None
    metadata: dict[str, MetadataText] = {}
    max_size: Annotated[int, Field(gt=0)]


class TerminateUpload(Command):
    upload_id: UploadId


class ExpireUpload(Command):
    upload_id: UploadId
    at: Instant


# ---------------------------------------------------------------- events


class UploadCreated(Event):
    upload_id: str
    owner: str
    filename: str | None
    file_type: str | None
    length: int | None
    partial: bool
    parts: list[str]
    expires_at: datetime | None
    metadata: dict[str, str]


class UploadLengthDeclared(Event):
    upload_id: str
    length: int


class ChunkReceived(Event):
    """One PATCH request's bytes (or those received before its client went away)."""

    upload_id: str
    offset: int
    length: int
    xxh3: str


class UploadCompleted(Event):
    upload_id: str
    length: int
    xxh3: str
    partial: bool


class UploadTerminated(Event):
    upload_id: str


class UploadExpired(Event):
    upload_id: str


# ---------------------------------------------------------------- state


@dataclass(frozen=True)
class UploadState:
    exists: bool = False
    owner: str | None = None
    status: UploadStatus = UploadStatus.UPLOADING
    length: int | None = None
    offset: int = 0
    partial: bool = False
    parts: tuple[str, ...] = ()
    expires_at: datetime | None = None
    xxh3: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()

    def expired_at(self, now: datetime) -> bool:
        """An unfinished upload past its lifetime is gone even before the timer records it."""
        if self.status is UploadStatus.EXPIRED:
            return True
        return (
            self.status is UploadStatus.UPLOADING
            and self.expires_at is not None
            and now >= self.expires_at
        )


def decide(state: UploadState, command: Command) -> list[Event]:
    match command:
        case CreateUpload():
            _require_new(state, command.upload_id)
            if command.length is not None and command.length > command.max_size:
                raise _too_large(command.length, command.max_size)
            return [
                UploadCreated(
                    upload_id=command.upload_id,
                    owner=command.owner,
                    filename=command.filename,
                    file_type=command.file_type,
                    length=command.length,
                    partial=command.partial,
                    parts=[],
                    expires_at=command.expires_at,
                    metadata=command.metadata,
                )
            ]
        case ConcatenateUploads():
            _require_new(state, command.upload_id)
            check_parts([part.upload_id for part in command.parts])
            for part in command.parts:
                _require_joinable(part)
            length = sum(part.length for part in command.parts)
            if length > command.max_size:
                raise _too_large(length, command.max_size)
            return [
                UploadCreated(
                    upload_id=command.upload_id,
                    owner=command.owner,
                    filename=command.filename,
                    file_type=command.file_type,
                    length=length,
                    partial=False,
                    parts=[part.upload_id for part in command.parts],
                    expires_at=command.expires_at,
                    metadata=command.metadata,
                )
            ]
    if not state.exists:
        upload_id = getattr(command, "upload_id", "?")
        raise NotFound("upload_not_found", f"Upload {upload_id} not found")
    match command:
        case RecordChunk():
            _require_open(state, command.at)
            if command.offset != state.offset:
                raise StateConflict(
                    "upload_offset_mismatch",
                    f"The upload is at offset {state.offset}, not {command.offset}",
                )
            end = command.offset + command.length
            if state.length is not None and end > state.length:
                raise Invalid(
                    "upload_exceeds_length",
                    f"{end} bytes would exceed the upload's length of {state.length}",
                )
            return [
                ChunkReceived(
                    upload_id=command.upload_id,
                    offset=command.offset,
                    length=command.length,
                    xxh3=command.xxh3,
                )
            ]
        case DeclareUploadLength():
            _require_open(state, command.at)
            if state.length is not None:
                if state.length == command.length:
                    return []
                raise StateConflict(
                    "upload_length_known", f"The upload's length is already {state.length}"
                )
            if command.length < state.offset:
                raise Invalid(
                    "upload_exceeds_length",
                    f"{state.offset} bytes were received, more than the length {command.length}",
                )
            if command.length > command.max_size:
                raise _too_large(command.length, command.max_size)
            return [UploadLengthDeclared(upload_id=command.upload_id, length=command.length)]
        case CompleteUpload():
            _require_open(state, command.at)
            # A final upload receives no chunks: its bytes are its parts', joined at once.
            if not state.parts and (state.length is None or state.offset != state.length):
                raise StateConflict(
                    "upload_unfinished", f"{state.offset} of {state.length} bytes were received"
                )
            if command.length != state.length:
                raise Invalid("upload_length_mismatch", "The stored bytes differ in length")
            return [
                UploadCompleted(
                    upload_id=command.upload_id,
                    length=command.length,
                    xxh3=command.xxh3,
                    partial=state.partial,
                )
            ]
        case TerminateUpload():
            if state.status in (UploadStatus.TERMINATED, UploadStatus.EXPIRED):
                raise Gone(f"upload_{state.status.value}", f"The upload was {state.status}")
            return [UploadTerminated(upload_id=command.upload_id)]
        case ExpireUpload():
            if state.status is not UploadStatus.UPLOADING:
                raise StateConflict("upload_not_uploading", f"The upload is {state.status}")
            if not state.expired_at(command.at):
                raise StateConflict("upload_not_expired", "The upload is within its lifetime")
            return [UploadExpired(upload_id=command.upload_id)]
    raise Invalid("unknown_command", f"Uploads do not handle {type(command).__name__}")


def check_parts(parts: Sequence[str]) -> None:
    """A final upload names each partial upload once, and at most ``MAX_PARTS`` of them.

    tus lets a partial upload be joined into any number of final uploads but does not say that
    one list may name it twice; a repeat only multiplies bytes that were uploaded once (1000
    copies of a 50 kB part make 50 MB), so it is refused. Callers check the list before they
    read a single part."""
    if len(parts) > MAX_PARTS:
        raise Invalid(
            "upload_too_many_parts",
            f"A final upload joins at most {MAX_PARTS} partial uploads, not {len(parts)}",
        )
    repeated = sorted(upload_id for upload_id, n in Counter(parts).items() if n > 1)
    if repeated:
        raise Invalid(
            "upload_parts_repeated",
            f"Each partial upload may appear once in a final upload; repeated: "
            f"{', '.join(repeated[:5])}",
        )


def _require_joinable(part: Part) -> None:
    if part.status in (UploadStatus.TERMINATED, UploadStatus.EXPIRED):
        raise Gone(
            f"upload_{part.status.value}", f"Partial upload {part.upload_id} is {part.status}"
        )
    if not part.partial:
        raise Invalid("upload_not_partial", f"Upload {part.upload_id} is not a partial upload")
    if part.status is not UploadStatus.COMPLETED:
        raise StateConflict(
            "upload_parts_unfinished", f"Partial upload {part.upload_id} is unfinished"
        )


def _require_new(state: UploadState, upload_id: str) -> None:
    if state.exists:
        raise StateConflict("upload_exists", f"Upload {upload_id} exists")


def _require_open(state: UploadState, now: datetime) -> None:
    """Bytes and lengths are accepted only while uploading and within the lifetime."""
    if state.status is UploadStatus.TERMINATED:
        raise Gone("upload_terminated", "The upload was terminated")
    if state.expired_at(now):
        raise Gone("upload_expired", "The upload expired before it was finished")
    if state.status is UploadStatus.COMPLETED:
        raise StateConflict("upload_completed", "The upload is already complete")


def _too_large(length: int, max_size: int) -> Invalid:
    return Invalid("upload_too_large", f"{length} bytes exceed the maximum of {max_size}")


def evolve(state: UploadState, event: Event) -> UploadState:
    match event:
        case UploadCreated():
            return UploadState(
                exists=True,
                owner=event.owner,
                length=event.length,
                partial=event.partial,
                parts=tuple(event.parts),
                expires_at=event.expires_at,
                metadata=tuple(sorted(event.metadata.items())),
            )
        case UploadLengthDeclared():
            return replace(state, length=event.length)
        case ChunkReceived():
            return replace(state, offset=event.offset + event.length)
        case UploadCompleted():
            return replace(
                state, status=UploadStatus.COMPLETED, offset=event.length, xxh3=event.xxh3
            )
        case UploadTerminated():
            return replace(state, status=UploadStatus.TERMINATED)
        case UploadExpired():
            return replace(state, status=UploadStatus.EXPIRED)
    return state


UPLOAD = Aggregate[UploadState](
    name="upload",
    initial=UploadState,
    decide=decide,
    evolve=evolve,
    events=(
        UploadCreated,
        UploadLengthDeclared,
        ChunkReceived,
        UploadCompleted,
        UploadTerminated,
        UploadExpired,
    ),
    creates=(CreateUpload, ConcatenateUploads),
    owner_of=lambda state: state.owner,
)
