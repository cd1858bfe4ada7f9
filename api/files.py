"""HTTP routes of files (seed: file upload with refer keys; check-hashes from the render seed).

A download by refer key counts its authenticated user towards the key's holder limit: the key
is the capability, so any role may use it, and the file's owner need not be the downloader.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Any

import pydantic_core
from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage, Stream
from pydantic import TypeAdapter
from sqlalchemy import Row, func, select

from adapters.envelope import RecordedEvent
from adapters.live_feed import FeedFilter, LiveFeed
from api import consistency
from api.auth import principal_of
from api.downloads import blob_response
from api.errors import ApiError
from api.events import sse_stream
from api.http import (
    AUTHENTICATED,
    CONTRIBUTE,
    OPERATE,
    READ,
    Page,
    PageSize,
    Rt,
    WaitForSeq,
    accepted,
    caller,
    command_context,
    page_rows,
    path_id,
    scoped,
    utc,
    visible,
)
from api.runtime import Runtime
from domain.access import Role
from domain.files import (
    FILE,
    CommentAdded,
    FileStatus,
    HolderLimitReached,
    ReferKeyIssued,
    UserId,
)
from handlers.commands import CommandContext
from handlers.files import (
    CheckHashesRequest,
    CommentRequest,
    RecommendationRequest,
    add_comment,
    save_recommendation,
)
from handlers.refer_keys import file_of_key, issue_refer_key, release_holder, use_refer_key
from projections.files import CONTENTS, FILES, contents, file_comments, files

_USER: TypeAdapter[str] = TypeAdapter(UserId)
# SSE event names of the file events a front end follows.
_STATUS_EVENTS = {
    "FileRegistered": "pending",
    "FileProcessingStarted": "processing",
    "FileStored": "ready",
    "FileDeduplicated": "ready",
    "FileFailed": "error",
    "RecommendationSaved": "db_ready",
}
_KEY_STATES = {
    "ReferKeyIssued": "live",
    "ReferKeyRotated": "live",
    "ReferKeyConsumed": "consumed",
    "ReferKeyExpired": "expired",
}


def download_url(refer_key: str) -> str:
    return f"/api/v1/download/{refer_key}"


def file_view(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    refer = None
    if m["refer_state"] is not None:
        refer = {
            "refer_key": m["refer_key"],
            "state": m["refer_state"],
            "download_url": download_url(m["refer_key"]) if m["refer_state"] != "expired" else None,
            "rotates_at": utc(m["refer_rotates_at"]) if m["refer_state"] == "live" else None,
            "ends_at": utc(m["refer_ends_at"]),
            "holders": json.loads(m["holders"]),
        }
    return {
        "file_id": m["file_id"],
        "status": m["status"],
        "owner": m["owner"],
        "filename": m["filename"],
        "file_type": m["file_type"],
        "length": m["length"],
        "hash": m["xxh3"],
        "asset_id": m["asset_id"],
        "storage_path": m["storage_path"],
        "deduplicated": bool(m["deduplicated"]),
        "error": m["error"],
        "refer": refer,
        "recommendation": json.loads(m["recommendation"]) if m["recommendation"] else None,
        "metadata": json.loads(m["metadata"]),
        "registered_at": utc(m["registered_at"]),
        "updated_at": utc(m["updated_at"]),
        "seq": m["last_seq"],
    }


async def _row(runtime: Runtime, file_id: str, request: Request[Any, Any, Any] | None) -> Row[Any]:
    """A file row; one the caller may not see is as missing as an unknown one (``request`` is
    None only behind a refer key, which is its own permission)."""
    async with runtime.sessions() as session:
        row = (await session.execute(select(files).where(files.c.file_id == file_id))).first()
    if row is None or (request is not None and not visible(request, row.owner)):
        raise ApiError(404, "file_not_found", f"File {file_id} not found")
    return row


def _by_key(request: Request[Any, Any, Any]) -> CommandContext:
    """Holding a refer key is the permission: its holders need not own the file."""
    return replace(command_context(request, None), owner_scope=None)


async def _wait(runtime: Runtime, seq: int | None) -> None:
    if seq:
        await consistency.wait_for_seq(runtime, (FILES,), seq)


def _stream_file(runtime: Runtime, row: Row[Any], range_header: str | None) -> Stream:
    m = row._mapping
    if m["status"] not in (FileStatus.READY, FileStatus.DB_READY):
        raise ApiError(409, "file_not_ready", f"File {m['file_id']} is {m['status']}")
    return blob_response(
        runtime.blobs.path(m["xxh3"]),
        range_header=range_header,
        digest=m["xxh3"],
        filename=m["filename"],
        media_type=m["file_type"],
    )


def sse_message(event: RecordedEvent) -> ServerSentEventMessage | None:
    """What a front end needs of one file event: its status, or the refer key to download by."""
    p = event.payload
    base = {"file_id": event.aggregate_id, "seq": event.seq, "at": event.occurred_at.isoformat()}
    if (status := _STATUS_EVENTS.get(event.type)) is not None:
        data = {**base, "status": status, "event": event.type}
        for key in ("asset_id", "storage_path", "reason"):
            if key in p:
                data[key] = p[key]
        return ServerSentEventMessage(id=str(event.seq), event="status", data=_json(data))
    if (state := _KEY_STATES.get(event.type)) is not None:
        data = {**base, "state": state, "refer_key": p["refer_key"], "event": event.type}
        if state != "expired":
            data["download_url"] = download_url(p["refer_key"])
            data["expires_at"] = p["expires_at"]
        return ServerSentEventMessage(id=str(event.seq), event="refer_key", data=_json(data))
    if event.type == "CommentAdded":
        return ServerSentEventMessage(id=str(event.seq), event="comment", data=_json({**base, **p}))
    return None


def _json(value: dict[str, Any]) -> str:
    return pydantic_core.to_json(value).decode()


class FileController(Controller):
    path = "/api/v1"
    tags = ["files"]

    @post(
        "/files/check-hashes",
        opt=READ,
        status_code=200,
        summary="Which contents are stored already",
    )
    async def check_hashes(
        self, runtime: Rt, data: JSONBody[CheckHashesRequest], wait_for_seq: WaitForSeq = None
    ) -> dict[str, Any]:
        if wait_for_seq:
            await consistency.wait_for_seq(runtime, (CONTENTS,), wait_for_seq)
        wanted = list(dict.fromkeys(h.lower() for h in data.hashes))
        async with runtime.sessions() as session:
            found = {
                r.xxh3: r
                for r in await session.execute(select(contents).where(contents.c.xxh3.in_(wanted)))
            }
        return {
            "existing": [
                {
                    "hash": h,
                    "asset_id": found[h].asset_id,
                    "storage_path": found[h].storage_path,
                    "size": found[h].size,
                }
                for h in wanted
                if h in found
            ],
            "missing": [h for h in wanted if h not in found],
        }

    @get("/files", opt=READ, summary="Files, newest first, paginated")
    async def list_files(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        status: FromQuery[FileStatus | None] = None,
        page: Page = 1,
        page_size: PageSize = 20,
        wait_for_seq: WaitForSeq = None,
    ) -> dict[str, Any]:
        await _wait(runtime, wait_for_seq)
        query = scoped(select(files), files.c.owner, request)
        count = scoped(select(func.count()).select_from(files), files.c.owner, request)
        if status is not None:
            query = query.where(files.c.status == status.value)
            count = count.where(files.c.status == status.value)
        query = query.order_by(files.c.registered_at.desc(), files.c.file_id)
        rows, total = await page_rows(runtime, query, count, page, page_size)
        return {
            "items": [file_view(r) for r in rows],
            "page": page,
            "page_size": page_size,
            "total": total,
        }

    @get(
        "/files/{file_id:str}",
        opt=READ,
        summary="One file: status, asset, refer key, recommendation",
    )
    async def get_file(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        file_id: FromPath[str],
        wait_for_seq: WaitForSeq = None,
    ) -> dict[str, Any]:
        await _wait(runtime, wait_for_seq)
        return file_view(await _row(runtime, file_id, request))

    @get(
        "/files/{file_id:str}/download",
        opt=READ,
        summary="The file's bytes (one Range honoured: 206, or 416 outside the file)",
    )
    async def download(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        file_id: FromPath[str],
        range_header: Annotated[str | None, HeaderParameter(name="Range", required=False)] = None,
        wait_for_seq: WaitForSeq = None,
    ) -> Stream:
        await _wait(runtime, wait_for_seq)
        return _stream_file(runtime, await _row(runtime, file_id, request), range_header)

    @post(
        "/files/{file_id:str}/refer-key",
        opt=OPERATE,
        status_code=202,
        summary="Issue a new refer key after the last one expired (409 while one is live)",
    )
    async def reissue(
        self, request: Request[Any, Any, Any], runtime: Rt, file_id: FromPath[str]
    ) -> Response[dict[str, Any]]:
        s = runtime.settings
        outcome = await issue_refer_key(
            runtime.commands,
            path_id(file_id),
            command_context(request, None),
            rotate_s=s.refer_rotate_s,
            max_s=s.refer_max_s,
        )
        issued = next(
            e
            for e in await runtime.commands.decided_events(FILE, outcome)
            if isinstance(e, ReferKeyIssued)
        )
        return accepted(
            outcome,
            file_id=file_id,
            refer_key=issued.refer_key,
            download_url=download_url(issued.refer_key),
            expires_at=issued.expires_at.isoformat(),
        )

    @delete(
        "/files/{file_id:str}/refer-key/holders/{user:str}",
        opt=AUTHENTICATED,
        status_code=202,
        summary="A user lets go of the refer key, freeing a holder slot",
    )
    async def release(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        file_id: FromPath[str],
        user: FromPath[str],
    ) -> Response[dict[str, Any]]:
        principal = principal_of(request)
        if principal is not None and principal.role is not Role.admin and user != principal.user:
            raise ApiError(403, "forbidden", "Only the holder (or an admin) releases a holder slot")
        outcome = await release_holder(
            runtime.commands,
            path_id(file_id),
            _USER.validate_python(user),
            _by_key(request),
        )
        return accepted(outcome, file_id=file_id, user=user, released=True)

    @get(
        "/files/{file_id:str}/events",
        opt=READ,
        summary="Live status and refer keys of one file as Server-Sent Events",
        description=(
            "Events `status`, `refer_key` (with the current `download_url`) and `comment`; each "
            "id is the event's stream sequence. Reconnect with `Last-Event-ID` to resume right "
            "after it; without it the stream starts with the file's first event."
        ),
    )
    async def events(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        file_id: FromPath[str],
        last_event_id: Annotated[
            int | None, HeaderParameter(name="Last-Event-ID", ge=0, required=False)
        ] = None,
    ) -> ServerSentEvent:
        state, version = await runtime.commands.repository.load(FILE, path_id(file_id))
        if version == 0 or not visible(request, state.owner or ""):
            raise ApiError(404, "file_not_found", f"File {file_id} not found")
        feed = LiveFeed(
            runtime.store,
            FeedFilter("file", file_id),
            from_seq=(last_event_id or 0) + 1,
            max_queue=runtime.settings.live_queue,
            closing=runtime.closing,
        )

        async def render(event: RecordedEvent) -> ServerSentEventMessage | None:
            return sse_message(event)

        return sse_stream(feed, render)

    @post(
        "/files/{file_id:str}/comments",
        opt=CONTRIBUTE,
        status_code=202,
        summary="Comment on a file",
    )
    async def comment(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        file_id: FromPath[str],
        data: JSONBody[CommentRequest],
    ) -> Response[dict[str, Any]]:
        outcome = await add_comment(
            runtime.commands, path_id(file_id), data, command_context(request, None)
        )
        added = next(
            e
            for e in await runtime.commands.decided_events(FILE, outcome)
            if isinstance(e, CommentAdded)
        )
        return accepted(outcome, file_id=file_id, comment_id=added.comment_id)

    @get("/files/{file_id:str}/comments", opt=READ, summary="A file's comments, oldest first")
    async def comments(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        file_id: FromPath[str],
        wait_for_seq: WaitForSeq = None,
    ) -> list[dict[str, Any]]:
        await _wait(runtime, wait_for_seq)
        await _row(runtime, file_id, request)
        async with runtime.sessions() as session:
            rows = (
                await session.execute(
                    select(file_comments)
                    .where(file_comments.c.file_id == file_id)
                    .order_by(file_comments.c.seq)
                )
            ).all()
        return [
            {
                "comment_id": r.comment_id,
                "author_kind": r.author_kind,
                "author": r.author,
                "text": r.text,
                "violation_severity": r.severity,
                "violation_categories": json.loads(r.categories),
                "added_at": utc(r.added_at),
                "seq": r.seq,
            }
            for r in rows
        ]

    @post(
        "/files/{file_id:str}/recommendations",
        opt=CONTRIBUTE,
        status_code=202,
        summary="Save the file's combined recommendation (replaces the last; status db_ready)",
    )
    async def recommend(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        file_id: FromPath[str],
        data: JSONBody[RecommendationRequest],
    ) -> Response[dict[str, Any]]:
        outcome = await save_recommendation(
            runtime.commands, path_id(file_id), data, command_context(request, None)
        )
        return accepted(outcome, file_id=file_id, status="db_ready")

    @get(
        "/download/{refer_key:str}",
        opt=AUTHENTICATED,
        summary="Download by refer key (410 when expired or superseded, 429 past the holder limit)",
    )
    async def download_by_key(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        refer_key: FromPath[str],
        range_header: Annotated[str | None, HeaderParameter(name="Range", required=False)] = None,
    ) -> Stream:
        user = caller(request)
        file_id = await file_of_key(runtime.sessions, refer_key)
        if file_id is None:  # issued a moment ago? let the projection catch up once
            await consistency.wait_for_seq(runtime, (FILES,), await runtime.store.last_seq())
            file_id = await file_of_key(runtime.sessions, refer_key)
        if file_id is None:
            raise ApiError(404, "refer_key_not_found", "Unknown refer key")
        try:
            await use_refer_key(
                runtime.commands,
                file_id,
                refer_key,
                user,
                _by_key(request),
                max_holders=runtime.settings.refer_max_holders,
            )
        except HolderLimitReached as full:
            raise ApiError(429, full.code, full.message) from full
        return _stream_file(runtime, await _row(runtime, file_id, None), range_header)


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (FileController,)
