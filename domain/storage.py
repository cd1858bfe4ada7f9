"""Each owner's storage account: the bytes their uploads hold, held against a quota.

The quota spans all of one owner's uploads, so no upload aggregate can hold it (as the deployment
limits span deployments, ``domain/deployment_slots.py``): an upload reserves its bytes here before
it may take any, and two racing reservations of one owner are ordered by this aggregate's
expected-sequence check, so they cannot both take the last bytes. Nothing here is read from a
projection.

Bytes are *in flight* while an upload is unfinished: its declared length from the moment it is
created (a final upload's is the sum of its parts), or, while its length is deferred, what it
received so far and the chunk on its way. They are *stored* once it completes, and are given back
if it is terminated or expires unfinished. Stored bytes stay counted: a completed upload's blob
stays in the store (a file is made of it), so a final upload counts besides its parts, whose bytes
it copied. A reservation whose upload was never recorded (its request died between the two
appends) is reclaimed once it is older than any request takes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from domain.base import (
    AGGREGATE_ID_PATTERN,
    Aggregate,
    Command,
    Event,
    Instant,
    Invalid,
    StateConflict,
)

UploadId = Annotated[str, StringConstraints(pattern=AGGREGATE_ID_PATTERN)]
Owner = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Length = Annotated[int, Field(ge=0)]
QUOTA_EXCEEDED = "storage_quota_exceeded"


def account_id(owner: str) -> str:
    """The account of an owner. Owner names may hold characters a subject token cannot ('.'),
    so the account is named by a digest of the name."""
    return hashlib.sha256(owner.encode()).hexdigest()


# ---------------------------------------------------------------- commands


class ReserveStorage(Command):
    """Let an upload hold ``length`` bytes in all (more or fewer than it held so far)."""

    owner: Owner
    upload_id: UploadId
    length: Length
    quota: Annotated[int, Field(ge=0)]  # bytes one owner may hold; 0: no quota
    at: Instant


class CommitStorage(Command):
    """The upload completed with ``length`` bytes: they are stored from now on."""

    upload_id: UploadId
    length: Length


class ReleaseStorage(Command):
    """The upload ended unfinished: its reservation is given back."""

    upload_id: UploadId


class ReclaimStorage(Command):
    """Give back a reservation whose upload was never recorded, if made before a cutoff."""

    upload_id: UploadId
    reserved_before: Instant


# ---------------------------------------------------------------- events


class StorageReserved(Event):
    owner: str
    upload_id: str
    length: int
    reserved_at: datetime


class StorageCommitted(Event):
    upload_id: str
    length: int


class StorageReleased(Event):
    upload_id: str


class StorageReclaimed(Event):
    upload_id: str


# ---------------------------------------------------------------- aggregate


@dataclass(frozen=True)
class Reservation:
    length: int
    reserved_at: datetime


@dataclass(frozen=True)
class AccountState:
    owner: str | None = None
    stored: int = 0
    in_flight: Mapping[str, Reservation] = field(default_factory=dict)

    @property
    def reserved(self) -> int:
        return sum(r.length for r in self.in_flight.values())

    @property
    def used(self) -> int:
        return self.stored + self.reserved

    def room(self, upload_id: str, quota: int) -> int | None:
        """How many bytes ``upload_id`` may hold in all under ``quota``; None when unlimited."""
        if quota == 0:
            return None
        held = self.in_flight.get(upload_id)
        others = self.used - (held.length if held else 0)
        return max(0, quota - others)


def decide(state: AccountState, command: Command) -> list[Event]:
    match command:
        case ReserveStorage():
            return _reserve(state, command)
        case CommitStorage():
            if command.upload_id not in state.in_flight:
                return []  # committed before, or it never held a byte
            return [StorageCommitted(upload_id=command.upload_id, length=command.length)]
        case ReleaseStorage():
            if command.upload_id not in state.in_flight:
                return []
            return [StorageReleased(upload_id=command.upload_id)]
        case ReclaimStorage():
            reservation = state.in_flight.get(command.upload_id)
            if reservation is None:
                return []
            if reservation.reserved_at >= command.reserved_before:
                raise StateConflict(
                    "reservation_too_recent",
                    f"The bytes of upload {command.upload_id} were reserved at "
                    f"{reservation.reserved_at.isoformat()}, too recently to tell a dead request "
                    "from a slow one",
                )
            return [StorageReclaimed(upload_id=command.upload_id)]
    raise Invalid("unknown_command", f"Storage accounts do not handle {type(command).__name__}")


def _reserve(state: AccountState, command: ReserveStorage) -> list[Event]:
    held = state.in_flight.get(command.upload_id)
    before = held.length if held else 0
    if (held is None and command.length == 0) or (held is not None and before == command.length):
        return []
    room = state.room(command.upload_id, command.quota)
    if command.length > before and room is not None and command.length > room:
        raise StateConflict(
            QUOTA_EXCEEDED,
            f"The storage quota is {command.quota} bytes per user and {state.used} are in use "
            f"({state.stored} stored, {state.reserved} in unfinished uploads); "
            f"{command.length - before} more do not fit",
        )
    return [
        StorageReserved(
            owner=command.owner,
            upload_id=command.upload_id,
            length=command.length,
            reserved_at=command.at,
        )
    ]


def evolve(state: AccountState, event: Event) -> AccountState:
    match event:
        case StorageReserved():
            reservation = Reservation(length=event.length, reserved_at=event.reserved_at)
            in_flight = {**state.in_flight, event.upload_id: reservation}
            return AccountState(owner=event.owner, stored=state.stored, in_flight=in_flight)
        case StorageCommitted():
            return AccountState(
                owner=state.owner,
                stored=state.stored + event.length,
                in_flight=_without(state.in_flight, event.upload_id),
            )
        case StorageReleased() | StorageReclaimed():
            return AccountState(
                owner=state.owner,
                stored=state.stored,
                in_flight=_without(state.in_flight, event.upload_id),
            )
    return state


def _without(in_flight: Mapping[str, Reservation], upload_id: str) -> dict[str, Reservation]:
    return {k: v for k, v in in_flight.items() if k != upload_id}


STORAGE = Aggregate[AccountState](
    name="storage",
    initial=AccountState,
    decide=decide,
    evolve=evolve,
    events=(StorageReserved, StorageCommitted, StorageReleased, StorageReclaimed),
    owner_of=lambda state: state.owner,
)
