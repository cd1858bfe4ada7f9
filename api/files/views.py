"""What file routes answer: a file with its asset and refer key, the contents a hash check
finds, comments, and the answers of the writes."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Row

from api.answers import Accepted, Answer, Instant
from api.routing import API_V1


def download_url(refer_key: str) -> str:
    return f"{API_V1}/download/{refer_key}"


class ReferView(Answer):
    """The file's refer key: ``download_url`` while it is not expired, ``rotates_at`` while live."""

    refer_key: str
    state: str
    download_url: str | None
    rotates_at: Instant | None
    ends_at: Instant | None
    holders: list[str]


class FileView(Answer):
    file_id: str
    status: str
    owner: str
    filename: str | None
    file_type: str | None
    length: int | None
    hash: str | None
    asset_id: str | None
    storage_path: str | None
    deduplicated: bool
    error: str | None
    refer: ReferView | None
    recommendation: dict[str, Any] | None
    metadata: dict[str, str]
    registered_at: Instant
    updated_at: Instant
    seq: int


def file_view(row: Row[Any]) -> FileView:
    m = row._mapping
    refer = None
    if m["refer_state"] is not None:
        refer = ReferView(
            refer_key=m["refer_key"],
            state=m["refer_state"],
            download_url=download_url(m["refer_key"]) if m["refer_state"] != "expired" else None,
            rotates_at=m["refer_rotates_at"] if m["refer_state"] == "live" else None,
            ends_at=m["refer_ends_at"],
            holders=json.loads(m["holders"]),
        )
    return FileView(
        file_id=m["file_id"],
        status=m["status"],
        owner=m["owner"],
        filename=m["filename"],
        file_type=m["file_type"],
        length=m["length"],
        hash=m["xxh3"],
        asset_id=m["asset_id"],
        storage_path=m["storage_path"],
        deduplicated=bool(m["deduplicated"]),
        error=m["error"],
        refer=refer,
        recommendation=json.loads(m["recommendation"]) if m["recommendation"] else None,
        metadata=json.loads(m["metadata"]),
        registered_at=m["registered_at"],
        updated_at=m["updated_at"],
        seq=m["last_seq"],
    )


class FilePage(Answer):
    items: list[FileView]
    page: int
    page_size: int
    total: int


class StoredContent(Answer):
    hash: str
    asset_id: str
    storage_path: str
    size: int


class HashCheck(Answer):
    existing: list[StoredContent]
    missing: list[str]


class CommentView(Answer):
    comment_id: str
    author_kind: str
    author: str
    text: str
    violation_severity: str
    violation_categories: list[str]
    added_at: Instant
    seq: int


class ReferKeyReissued(Accepted):
    file_id: str
    refer_key: str
    download_url: str
    expires_at: Instant


class HolderReleased(Accepted):
    file_id: str
    user: str
    released: bool


class CommentAccepted(Accepted):
    file_id: str
    comment_id: str


class RecommendationAccepted(Accepted):
    file_id: str
    status: str
