"""Files (seed: file upload with refer keys).

A file is born from a finished regular upload: ``pending`` while its bytes arrive, ``processing``
once they are all there, ``ready`` when its content is claimed, ``db_ready`` when the analysis
(one combined recommendation) is saved, or ``error`` when its upload died first.

Identical bytes are stored once: ``domain.contents`` decides which file stores them.

A ready file hands out a refer key for analysers. The key is rotated every ``rotate_s`` for at most
``max_s`` by timer commands that name the generation they saw, so a stale timer is refused rather
than rotating twice. The first download by a key stops the rotation (the key then stays valid until
the chain's end). At most ``max_holders`` distinct users may hold the key at once; a holder
releases its slot explicitly, and a re-issued key starts with none.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from domain.base import (
    AGGREGATE_ID_PATTERN,
    Aggregate,
    Command,
    Event,
    Gone,
    Instant,
    Invalid,
    NotFound,
    PositiveSeconds,
    StateConflict,
)

FileId = Annotated[str, StringConstraints(pattern=AGGREGATE_ID_PATTERN)]
Digest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@:-]{1,128}$")]
ReferKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16,128}$")]
Severity = Literal["none", "mild", "moderate", "severe"]
AuthorKind = Literal["user", "analyser"]
CategoryCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]


class FileStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"
    ERROR = "error"
    DB_READY = "db_ready"


STORED = frozenset({FileStatus.READY, FileStatus.DB_READY})


def storage_path(digest: str) -> str:
    """Where an asset lives, as clients see it (the bytes are in the content-addressed store)."""
    return f"assets/{digest}"


class HolderLimitReached(StateConflict):
    """Too many distinct users hold the refer key; the edge answers 429, not 409."""


# ---------------------------------------------------------------- commands


class RegisterFile(Command):
    file_id: FileId
    owner: str
    filename: str | None
    file_type: str | None
    length: int | None
    metadata: dict[str, str]
    at: Instant


class StartProcessing(Command):
    file_id: FileId
    length: Annotated[int, Field(ge=0)]
    xxh3: Digest
    at: Instant


class StoreFile(Command):
    """Record the content claim's outcome and issue the first refer key in the same append."""

    file_id: FileId
    asset_id: str
    storage_path: str
    deduplicated: bool
    refer_key: ReferKey
    rotate_s: PositiveSeconds
    max_s: PositiveSeconds
    at: Instant


class FailFile(Command):
    file_id: FileId
    reason: str
    at: Instant


class IssueReferKey(Command):
    file_id: FileId
    refer_key: ReferKey
    rotate_s: PositiveSeconds
    max_s: PositiveSeconds
    at: Instant


class RotateReferKey(Command):
    file_id: FileId
    generation: int
    refer_key: ReferKey
    rotate_s: PositiveSeconds
    at: Instant


class ExpireReferKey(Command):
    file_id: FileId
    generation: int
    at: Instant


class UseReferKey(Command):
    """A user starts a download by refer key."""

    file_id: FileId
    refer_key: str
    user: UserId
    max_holders: Annotated[int, Field(ge=1)]
    at: Instant


class ReleaseHolder(Command):
    file_id: FileId
    user: UserId


class AddComment(Command):
    file_id: FileId
    comment_id: str
    author_kind: AuthorKind
    author: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    text: Text
    severity: Severity
    categories: list[CategoryCode]
    at: Instant


class SaveRecommendation(Command):
    file_id: FileId
    text: Text
    severity: Severity
    categories: list[CategoryCode]
    user_comment: str | None
    analyser_comment: str | None
    at: Instant


# ---------------------------------------------------------------- events


class FileRegistered(Event):
    file_id: str
    owner: str
    filename: str | None
    file_type: str | None
    length: int | None
    metadata: dict[str, str]
    registered_at: datetime


class FileProcessingStarted(Event):
    file_id: str
    length: int
    xxh3: str


class FileStored(Event):
    file_id: str
    asset_id: str
    storage_path: str


class FileDeduplicated(Event):
    """The same bytes were stored before: the file refers to that asset, no second copy."""

    file_id: str
    asset_id: str
    storage_path: str


class FileFailed(Event):
    file_id: str
    reason: str


class ReferKeyIssued(Event):
    file_id: str
    refer_key: str
    generation: int
    issued_at: datetime
    expires_at: datetime
    chain_ends_at: datetime


class ReferKeyRotated(Event):
    file_id: str
    refer_key: str
    previous_key: str
    generation: int
    expires_at: datetime


class ReferKeyConsumed(Event):
    """The first download by the key: rotation stops, the key lives until the chain ends."""

    file_id: str
    refer_key: str
    user: str
    expires_at: datetime


class ReferKeyExpired(Event):
    file_id: str
    refer_key: str


class ReferKeyHolderAdded(Event):
    file_id: str
    user: str


class ReferKeyHolderReleased(Event):
    file_id: str
    user: str


class CommentAdded(Event):
    file_id: str
    comment_id: str
    author_kind: str
    author: str
    text: str
    severity: str
    categories: list[str]
    added_at: datetime


class RecommendationSaved(Event):
    file_id: str
    text: str
    severity: str
    categories: list[str]
    user_comment: str | None
    analyser_comment: str | None
    saved_at: datetime


# ---------------------------------------------------------------- file


@dataclass(frozen=True)
class ReferChain:
    """The refer key handed out now, and when its chain of rotations ends."""

    key: str
    generation: int
    rotates_at: datetime
    ends_at: datetime
    live: bool = True
    consumed: bool = False


@dataclass(frozen=True)
class FileState:
    exists: bool = False
    owner: str | None = None
    status: FileStatus = FileStatus.PENDING
    xxh3: str | None = None
    generation: int = 0
    chain: ReferChain | None = None
    retired_keys: frozenset[str] = frozenset()
    holders: frozenset[str] = frozenset()


def decide(state: FileState, command: Command) -> list[Event]:
    if isinstance(command, RegisterFile):
        if state.exists:
            return []  # the upload's creation was seen before (a redelivery)
        return [
            FileRegistered(
                file_id=command.file_id,
                owner=command.owner,
                filename=command.filename,
                file_type=command.file_type,
                length=command.length,
                metadata=command.metadata,
                registered_at=command.at,
            )
        ]
    if not state.exists:
        file_id = getattr(command, "file_id", "?")
        raise NotFound("file_not_found", f"File {file_id} not found")
    match command:
        case StartProcessing():
            if state.status is not FileStatus.PENDING:
                if state.xxh3 == command.xxh3:
                    return []
                raise StateConflict("file_not_pending", f"File is {state.status}")
            return [
                FileProcessingStarted(
                    file_id=command.file_id, length=command.length, xxh3=command.xxh3
                )
            ]
        case StoreFile():
            if state.status in STORED:
                return []
            _require(state, FileStatus.PROCESSING)
            kind = FileDeduplicated if command.deduplicated else FileStored
            stored = kind(
                file_id=command.file_id,
                asset_id=command.asset_id,
                storage_path=command.storage_path,
            )
            issue = IssueReferKey(
                file_id=command.file_id,
                refer_key=command.refer_key,
                rotate_s=command.rotate_s,
                max_s=command.max_s,
                at=command.at,
            )
            return [stored, _issue(state, issue)]
        case FailFile():
            if state.status not in (FileStatus.PENDING, FileStatus.PROCESSING):
                raise StateConflict("file_not_in_progress", f"File is {state.status}")
            return [FileFailed(file_id=command.file_id, reason=command.reason)]
        case IssueReferKey():
            _require_stored(state)
            if state.chain is not None and state.chain.live:
                raise StateConflict(
                    "refer_key_live", "The file has a live refer key; it cannot be re-issued yet"
                )
            return [_issue(state, command)]
        case RotateReferKey():
            chain = _timer_chain(state, command.generation)
            if chain.consumed:
                raise StateConflict("refer_key_consumed", "A download started; rotation stopped")
            if command.at < chain.rotates_at:
                raise StateConflict("refer_key_not_due", "The refer key is not due for rotation")
            if command.at >= chain.ends_at:
                raise StateConflict("refer_key_chain_over", "The refer key is due to expire")
            return [
                ReferKeyRotated(
                    file_id=command.file_id,
                    refer_key=command.refer_key,
                    previous_key=chain.key,
                    generation=state.generation + 1,
                    expires_at=min(command.at + timedelta(seconds=command.rotate_s), chain.ends_at),
                )
            ]
        case ExpireReferKey():
            chain = _timer_chain(state, command.generation)
            if command.at < chain.ends_at:
                raise StateConflict("refer_key_not_due", "The refer key chain has time left")
            return [ReferKeyExpired(file_id=command.file_id, refer_key=chain.key)]
        case UseReferKey():
            return _use(state, command)
        case ReleaseHolder():
            if command.user not in state.holders:
                raise NotFound("holder_not_found", f"{command.user} holds no refer key here")
            return [ReferKeyHolderReleased(file_id=command.file_id, user=command.user)]
        case AddComment():
            return [
                CommentAdded(
                    file_id=command.file_id,
                    comment_id=command.comment_id,
                    author_kind=command.author_kind,
                    author=command.author,
                    text=command.text,
                    severity=command.severity,
                    categories=sorted(set(command.categories)),
                    added_at=command.at,
                )
            ]
        case SaveRecommendation():
            _require_stored(state)
            return [
                RecommendationSaved(
                    file_id=command.file_id,
                    text=command.text,
                    severity=command.severity,
                    categories=sorted(set(command.categories)),
                    user_comment=command.user_comment,
                    analyser_comment=command.analyser_comment,
                    saved_at=command.at,
                )
            ]
    raise Invalid("unknown_command", f"Files do not handle {type(command).__name__}")


def _issue(state: FileState, command: IssueReferKey) -> ReferKeyIssued:
    ends = command.at + timedelta(seconds=command.max_s)
    return ReferKeyIssued(
        file_id=command.file_id,
        refer_key=command.refer_key,
        generation=state.generation + 1,
        issued_at=command.at,
        expires_at=min(command.at + timedelta(seconds=command.rotate_s), ends),
        chain_ends_at=ends,
    )


def _timer_chain(state: FileState, generation: int) -> ReferChain:
    """The live chain a timer command is about; a timer that saw an older key is refused."""
    if state.chain is None or not state.chain.live:
        raise StateConflict("refer_key_not_live", "The file has no live refer key")
    if generation != state.generation:
        raise StateConflict("refer_key_stale", "The refer key changed since the timer looked")
    return state.chain


def _use(state: FileState, command: UseReferKey) -> list[Event]:
    chain = state.chain
    if chain is None or command.refer_key != chain.key:
        if command.refer_key in state.retired_keys:
            raise Gone("refer_key_superseded", "This refer key was replaced by a newer one")
        raise NotFound("refer_key_not_found", "Unknown refer key")
    if not chain.live or command.at >= chain.ends_at:
        raise Gone("refer_key_expired", "This refer key has expired; ask for a new one")
    events: list[Event] = []
    if command.user not in state.holders:
        if len(state.holders) >= command.max_holders:
            raise HolderLimitReached(
                "refer_key_holder_limit",
                f"At most {command.max_holders} users may hold this file's refer key at once; "
                "one of them must release it first",
            )
        events.append(ReferKeyHolderAdded(file_id=command.file_id, user=command.user))
    if not chain.consumed:
        consumed = ReferKeyConsumed(
            file_id=command.file_id,
            refer_key=chain.key,
            user=command.user,
            expires_at=chain.ends_at,
        )
        events.insert(0, consumed)
    return events


def _require(state: FileState, status: FileStatus) -> None:
    if state.status is not status:
        raise StateConflict(f"file_not_{status.value}", f"File is {state.status}")


def _require_stored(state: FileState) -> None:
    if state.status not in STORED:
        raise StateConflict("file_not_ready", f"File is {state.status}, not stored yet")


def evolve(state: FileState, event: Event) -> FileState:
    match event:
        case FileRegistered():
            return FileState(exists=True, owner=event.owner)
        case FileProcessingStarted():
            return replace(state, status=FileStatus.PROCESSING, xxh3=event.xxh3)
        case FileStored() | FileDeduplicated():
            return replace(state, status=FileStatus.READY)
        case FileFailed():
            return replace(state, status=FileStatus.ERROR)
        case RecommendationSaved():
            return replace(state, status=FileStatus.DB_READY)
        case ReferKeyIssued():
            old = state.chain
            chain = ReferChain(
                event.refer_key, event.generation, event.expires_at, event.chain_ends_at
            )
            retired = state.retired_keys | ({old.key} if old else set())
            return replace(
                state,
                generation=event.generation,
                chain=chain,
                retired_keys=retired,
                holders=frozenset(),
            )
        case ReferKeyRotated():
            assert state.chain is not None
            chain = replace(
                state.chain,
                key=event.refer_key,
                generation=event.generation,
                rotates_at=event.expires_at,
            )
            return replace(
                state,
                generation=event.generation,
                chain=chain,
                retired_keys=state.retired_keys | {event.previous_key},
            )
        case ReferKeyConsumed():
            assert state.chain is not None
            chain = replace(state.chain, consumed=True, rotates_at=event.expires_at)
            return replace(state, chain=chain)
        case ReferKeyExpired():
            assert state.chain is not None
            return replace(state, chain=replace(state.chain, live=False))
        case ReferKeyHolderAdded():
            return replace(state, holders=state.holders | {event.user})
        case ReferKeyHolderReleased():
            return replace(state, holders=state.holders - {event.user})
    return state


FILE = Aggregate[FileState](
    name="file",
    initial=FileState,
    decide=decide,
    evolve=evolve,
    events=(
        FileRegistered,
        FileProcessingStarted,
        FileStored,
        FileDeduplicated,
        FileFailed,
        ReferKeyIssued,
        ReferKeyRotated,
        ReferKeyConsumed,
        ReferKeyExpired,
        ReferKeyHolderAdded,
        ReferKeyHolderReleased,
        CommentAdded,
        RecommendationSaved,
    ),
    creates=(RegisterFile,),
    owner_of=lambda state: state.owner,
)
