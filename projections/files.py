"""Read models of files: status, refer keys, comments, stored contents and the violation catalogue.

A file's status is derived from its events (registered, processing started, stored or
deduplicated, failed, recommendation saved). The ``refer_keys`` table finds the file a key belongs
to; whether the key still works is decided by the file aggregate, not by this table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text, delete
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.envelope import RecordedEvent
from adapters.sql import insert_ignoring
from domain.contents import CONTENT
from domain.files import FILE
from domain.violations import VIOLATIONS
from projections.base import Projection, metadata
from projections.rows import RowBatch

files = Table(
    "files",
    metadata,
    Column("file_id", String(128), primary_key=True),
    Column("owner", String(256), nullable=False),
    Column("filename", Text),
    Column("file_type", String(256)),
    Column("length", BigInteger),
    Column("metadata", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("xxh3", String(32)),
    Column("asset_id", String(64)),
    Column("storage_path", String(64)),
    Column("deduplicated", Integer, nullable=False),
    Column("error", Text),
    Column("refer_key", String(128)),
    Column("refer_generation", Integer, nullable=False),
    Column("refer_state", String(16)),
    Column("refer_rotates_at", DateTime(timezone=True)),
    Column("refer_ends_at", DateTime(timezone=True)),
    Column("holders", Text, nullable=False),
    Column("recommendation", Text),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Index("ix_files_status", "status", "registered_at"),
    Index("ix_files_refer", "refer_state", "refer_rotates_at"),
)

refer_keys = Table(
    "refer_keys",
    metadata,
    Column("refer_key", String(128), primary_key=True),
    Column("file_id", String(128), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)

file_comments = Table(
    "file_comments",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("comment_id", String(64), nullable=False),
    Column("file_id", String(128), nullable=False),
    Column("author_kind", String(16), nullable=False),
    Column("author", String(128), nullable=False),
    Column("text", Text, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("categories", Text, nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
    Index("ix_file_comments", "file_id", "seq"),
)

contents = Table(
    "contents",
    metadata,
    Column("xxh3", String(32), primary_key=True),
    Column("asset_id", String(64), nullable=False),
    Column("storage_path", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("file_id", String(128), nullable=False),
    Column("reference_count", Integer, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
)

violations = Table(
    "violations",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


class FileRows:
    def __init__(self) -> None:
        self.files = RowBatch(files)
        self.keys = RowBatch(refer_keys)
        self.comments = RowBatch(file_comments)

    async def load(self, session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        await self.files.load(session, {e.aggregate_id for e in events})
        keys = {
            e.payload[k] for e in events for k in ("previous_key", "refer_key") if k in e.payload
        }
        current = {r["refer_key"] for r in self.files.rows.values() if r["refer_key"]}
        await self.keys.load(session, keys | current)


def apply_file_event(rows: FileRows, event: RecordedEvent) -> None:
    p = event.payload
    key = event.aggregate_id
    touched = {"updated_at": event.occurred_at, "last_seq": event.seq}
    match event.type:
        case "FileRegistered":
            rows.files.insert(
                {
                    "file_id": key,
                    "owner": p["owner"],
                    "filename": p["filename"],
                    "file_type": p["file_type"],
                    "length": p["length"],
                    "metadata": json.dumps(p["metadata"], sort_keys=True),
                    "status": "pending",
                    "deduplicated": 0,
                    "refer_generation": 0,
                    "holders": "[]",
                    "registered_at": datetime.fromisoformat(p["registered_at"]),
                    **touched,
                }
            )
        case "FileProcessingStarted":
            rows.files.update(
                key, status="processing", length=p["length"], xxh3=p["xxh3"], **touched
            )
        case "FileStored" | "FileDeduplicated":
            rows.files.update(
                key,
                status="ready",
                asset_id=p["asset_id"],
                storage_path=p["storage_path"],
                deduplicated=int(event.type == "FileDeduplicated"),
                **touched,
            )
        case "FileFailed":
            rows.files.update(key, status="error", error=p["reason"], **touched)
        case "RecommendationSaved":
            recommendation = {k: v for k, v in p.items() if k != "file_id"}
            rows.files.update(
                key, status="db_ready", recommendation=json.dumps(recommendation), **touched
            )
        case "ReferKeyIssued":
            _retire_current(rows, key)
            _add_key(rows, event)
            rows.files.update(
                key,
                refer_key=p["refer_key"],
                refer_generation=p["generation"],
                refer_state="live",
                refer_rotates_at=datetime.fromisoformat(p["expires_at"]),
                refer_ends_at=datetime.fromisoformat(p["chain_ends_at"]),
                holders="[]",
                **touched,
            )
        case "ReferKeyRotated":
            rows.keys.update(p["previous_key"], state="superseded")
            _add_key(rows, event)
            rows.files.update(
                key,
                refer_key=p["refer_key"],
                refer_generation=p["generation"],
                refer_rotates_at=datetime.fromisoformat(p["expires_at"]),
                **touched,
            )
        case "ReferKeyConsumed":
            rows.keys.update(p["refer_key"], state="consumed")
            rows.files.update(
                key,
                refer_state="consumed",
                refer_rotates_at=datetime.fromisoformat(p["expires_at"]),
                **touched,
            )
        case "ReferKeyExpired":
            rows.keys.update(p["refer_key"], state="expired")
            rows.files.update(key, refer_state="expired", refer_rotates_at=None, **touched)
        case "ReferKeyHolderAdded" | "ReferKeyHolderReleased":
            row = rows.files.get(key)
            if row is not None:
                holders = set(json.loads(row["holders"]))
                if event.type == "ReferKeyHolderAdded":
                    holders.add(p["user"])
                else:
                    holders.discard(p["user"])
                rows.files.update(key, holders=json.dumps(sorted(holders)), **touched)
        case "CommentAdded":
            rows.comments.insert(
                {
                    "seq": event.seq,
                    "comment_id": p["comment_id"],
                    "file_id": key,
                    "author_kind": p["author_kind"],
                    "author": p["author"],
                    "text": p["text"],
                    "severity": p["severity"],
                    "categories": json.dumps(p["categories"]),
                    "added_at": datetime.fromisoformat(p["added_at"]),
                }
            )


def _add_key(rows: FileRows, event: RecordedEvent) -> None:
    rows.keys.insert(
        {
            "refer_key": event.payload["refer_key"],
            "file_id": event.aggregate_id,
            "generation": event.payload["generation"],
            "state": "live",
            "issued_at": event.occurred_at,
        }
    )


def _retire_current(rows: FileRows, file_id: str) -> None:
    """A re-issued chain replaces the previous (expired) key."""
    row = rows.files.get(file_id)
    if row is not None and row["refer_key"] is not None:
        rows.keys.update(row["refer_key"], state="superseded")


async def apply_file_batch(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
    rows = FileRows()
    await rows.load(session, events)
    for event in events:
        apply_file_event(rows, event)
    await rows.files.flush(session)
    await rows.keys.flush(session)
    await rows.comments.flush(session)


async def apply_content_batch(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
    rows = RowBatch(contents)
    await rows.load(session, {e.aggregate_id for e in events})
    for event in events:
        p = event.payload
        if event.type == "ContentStored":
            rows.insert(
                {
                    "xxh3": event.aggregate_id,
                    "asset_id": p["asset_id"],
                    "storage_path": p["storage_path"],
                    "size": p["size"],
                    "file_id": p["file_id"],
                    "reference_count": 1,
                    "stored_at": event.occurred_at,
                }
            )
        elif event.type == "ContentReferenced" and (row := rows.get(event.aggregate_id)):
            rows.update(event.aggregate_id, reference_count=row["reference_count"] + 1)
    await rows.flush(session)


async def apply_violation_batch(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
    """Few, rare events: one statement each is simpler than a row batch that cannot delete."""
    for event in events:
        p = event.payload
        await session.execute(delete(violations).where(violations.c.code == p["code"]))
        if event.type == "ViolationDefined":
            row = {
                "code": p["code"],
                "name": p["name"],
                "description": p["description"],
                "updated_at": event.occurred_at,
            }
            await session.execute(insert_ignoring(session, violations, row))


FILES = Projection(
    name="files",
    source=FILE,
    tables=(files, refer_keys, file_comments),
    apply=apply_file_batch,
)
CONTENTS = Projection(
    name="contents", source=CONTENT, tables=(contents,), apply=apply_content_batch
)
VIOLATIONS_CATALOGUE = Projection(
    name="violations",
    source=VIOLATIONS,
    tables=(violations,),
    apply=apply_violation_batch,
)
