"""Read model of resumable uploads: who uploads what, how far it got, and how it ended.

The tus protocol itself never reads this table (HEAD answers from the aggregate); it serves the
status route, listings, and the timer that looks for uploads past their lifetime.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.envelope import RecordedEvent
from domain.uploads import UPLOAD
from projections.base import Projection, metadata
from projections.rows import RowBatch

uploads = Table(
    "uploads",
    metadata,
    Column("upload_id", String(128), primary_key=True),
    Column("owner", String(256), nullable=False),
    Column("filename", Text),
    Column("file_type", Text),
    Column("length", BigInteger),
    Column("offset", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("partial", Integer, nullable=False),
    Column("parts", Text, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("xxh3", String(32)),
    Column("expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Index("ix_uploads_status", "status", "expires_at"),
)

_ENDED = {"UploadTerminated": "terminated", "UploadExpired": "expired"}


def apply_upload_event(rows: RowBatch, event: RecordedEvent) -> None:
    p = event.payload
    key = event.aggregate_id
    touched = {"updated_at": event.occurred_at, "last_seq": event.seq}
    match event.type:
        case "UploadCreated":
            expires = p["expires_at"]
            rows.insert(
                {
                    "upload_id": key,
                    "owner": p["owner"],
                    "filename": p["filename"],
                    "file_type": p["file_type"],
                    "length": p["length"],
                    "offset": 0,
                    "status": "uploading",
                    "partial": int(p["partial"]),
                    "parts": json.dumps(p["parts"]),
                    "chunks": 0,
                    "expires_at": datetime.fromisoformat(expires) if expires else None,
                    "created_at": event.occurred_at,
                    **touched,
                }
            )
        case "UploadLengthDeclared":
            rows.update(key, length=p["length"], **touched)
        case "ChunkReceived":
            row = rows.get(key)
            chunks = row["chunks"] + 1 if row else 1
            rows.update(key, offset=p["offset"] + p["length"], chunks=chunks, **touched)
        case "UploadCompleted":
            rows.update(
                key, status="completed", offset=p["length"], length=p["length"], xxh3=p["xxh3"],
                **touched,
            )  # fmt: skip
        case kind if kind in _ENDED:
            rows.update(key, status=_ENDED[kind], **touched)


async def apply_upload_batch(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
    rows = RowBatch(uploads)
    await rows.load(session, {e.aggregate_id for e in events})
    for event in events:
        apply_upload_event(rows, event)
    await rows.flush(session)


UPLOADS = Projection(
    name="uploads",
    source=UPLOAD,
    tables=(uploads,),
    apply=apply_upload_batch,
)
