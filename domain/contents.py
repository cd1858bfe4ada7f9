"""The content files share: identical bytes are stored once.

The ``content`` aggregate, keyed by the xxh3-128 digest, records which file claimed the bytes
first (``ContentStored``, a new asset); every later claimer gets a reference to that asset
(``ContentReferenced``). Two racing claims are ordered by this aggregate's optimistic
concurrency, so exactly one of them stores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

from pydantic import Field

from domain.base import Aggregate, Command, Event, Invalid
from domain.files import Digest, FileId, storage_path

# ---------------------------------------------------------------- commands


class ClaimContent(Command):
    xxh3: Digest
    file_id: FileId
    size: Annotated[int, Field(ge=0)]
    asset_id: str


# ---------------------------------------------------------------- events


class ContentStored(Event):
    xxh3: str
    asset_id: str
    storage_path: str
    size: int
    file_id: str


class ContentReferenced(Event):
    xxh3: str
    asset_id: str
    file_id: str


# ---------------------------------------------------------------- aggregate


@dataclass(frozen=True)
class ContentState:
    asset_id: str | None = None
    owner: str | None = None
    referrers: frozenset[str] = frozenset()


def decide(state: ContentState, command: Command) -> list[Event]:
    if not isinstance(command, ClaimContent):
        raise Invalid("unknown_command", f"Contents do not handle {type(command).__name__}")
    if state.asset_id is None:
        return [
            ContentStored(
                xxh3=command.xxh3,
                asset_id=command.asset_id,
                storage_path=storage_path(command.xxh3),
                size=command.size,
                file_id=command.file_id,
            )
        ]
    if command.file_id == state.owner or command.file_id in state.referrers:
        return []  # this file's claim was recorded before
    return [ContentReferenced(xxh3=command.xxh3, asset_id=state.asset_id, file_id=command.file_id)]


def evolve(state: ContentState, event: Event) -> ContentState:
    match event:
        case ContentStored():
            return ContentState(asset_id=event.asset_id, owner=event.file_id)
        case ContentReferenced():
            return replace(state, referrers=state.referrers | {event.file_id})
    return state


CONTENT = Aggregate[ContentState](
    name="content",
    initial=ContentState,
    decide=decide,
    evolve=evolve,
    events=(ContentStored, ContentReferenced),
)
