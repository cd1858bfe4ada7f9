"""The API keys read model: what the authentication middleware looks a presented key up in."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import BigInteger, Column, DateTime, String, Table, update
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.envelope import RecordedEvent
from adapters.sql import insert_ignoring
from domain.access import API_KEY
from projections.base import Projection, metadata

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("user", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("label", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_seq", BigInteger, nullable=False),
)


async def apply_key_events(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
    for event in events:
        p = event.payload
        match event.type:
            case "ApiKeyCreated":
                row = {
                    "key_id": p["key_id"],
                    "user": p["user"],
                    "role": p["role"],
                    "digest": p["digest"],
                    "label": p["label"],
                    "created_at": event.occurred_at,
                    "revoked_at": None,
                    "last_seq": event.seq,
                }
                await session.execute(insert_ignoring(session, api_keys, row))
            case "ApiKeyRevoked":
                await session.execute(
                    update(api_keys)
                    .where(api_keys.c.key_id == p["key_id"])
                    .values(revoked_at=event.occurred_at, last_seq=event.seq)
                )


API_KEYS = Projection(
    name="api_keys",
    source=API_KEY,
    tables=(api_keys,),
    apply=apply_key_events,
)
