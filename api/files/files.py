"""Files as uploads become them: which contents are stored already, the files, their bytes
(one Range honoured) and their live status feed."""

from __future__ import annotations

from typing import Annotated, Any

import pydantic_core
from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage, Stream
from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.blob_store import LocalBlobStore
from adapters.envelope import RecordedEvent
from adapters.live_feed import FeedFilter
from api.dependencies import Aggregates, Blobs, Live, ReadAfter, read_after
from api.downloads import blob_response
from api.errors import ApiError
from api.events import sse_stream
from api.files.views import (
    FilePage,
    FileView,
    HashCheck,
    StoredContent,
    download_url,
    file_view,
)
from api.http import (
    LIVE_READ,
    MAX_SEQ,
    READ,
    Page,
    PageSize,
    owner_scope,
    page_rows,
    path_id,
    scoped,
    visible,
)
from domain.files import FILE, FileStatus
from handlers.files import CheckHashesRequest
from projections.files import CONTENTS, FILES, contents, files

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
RangeHeader = Annotated[str | None, HeaderParameter(name="Range", required=False)]


async def file_row(
    sessions: async_sessionmaker[AsyncSession],
    file_id: str,
    request: Request[Any, Any, Any] | None,
) -> Row[Any]:
    """A file row; one the caller may not see is as missing as an unknown one (``request`` is
    None only behind a refer key, which is its own permission)."""
    async with sessions() as session:
        row = (await session.execute(select(files).where(files.c.file_id == file_id))).first()
    if row is None or (request is not None and not visible(request, row.owner)):
        raise ApiError(404, "file_not_found", f"File {file_id} not found")
    return row


def stream_file(blobs: LocalBlobStore, row: Row[Any], range_header: str | None) -> Stream:
    m = row._mapping
    if m["status"] not in (FileStatus.READY, FileStatus.DB_READY):
        raise ApiError(409, "file_not_ready", f"File {m['file_id']} is {m['status']}")
    return blob_response(
        blobs.path(m["xxh3"]),
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
    path = "/files"
    tags = ["files"]
    dependencies = {"read_after": read_after(FILES)}

    @post(
        "/check-hashes",
        opt=READ,
        status_code=200,
        summary="Which contents are stored already",
        description=(
            "A content counts as stored for the caller when one of the caller's own files holds "
            "it (an admin's: any file). Another user's content is answered as missing, so the "
            "answer says nothing about what others uploaded; uploading it again still stores "
            "the bytes once."
        ),
        dependencies={"read_after": read_after(CONTENTS, FILES)},
    )
    async def check_hashes(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        data: JSONBody[CheckHashesRequest],
    ) -> HashCheck:
        wanted = list(dict.fromkeys(h.lower() for h in data.hashes))
        query = select(contents).where(contents.c.xxh3.in_(wanted))
        if (scope := owner_scope(request)) is not None:
            mine = select(files.c.xxh3).where(files.c.owner == scope, files.c.xxh3.in_(wanted))
            query = query.where(contents.c.xxh3.in_(mine))
        async with read_after() as session:
            found = {r.xxh3: r for r in await session.execute(query)}
        return HashCheck(
            existing=[
                StoredContent(
                    hash=h,
                    asset_id=found[h].asset_id,
                    storage_path=found[h].storage_path,
                    size=found[h].size,
                )
                for h in wanted
                if h in found
            ],
            missing=[h for h in wanted if h not in found],
        )

    @get("/", opt=READ, summary="Files, newest first, paginated")
    async def list_files(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        status: FromQuery[FileStatus | None] = None,
        page: Page = 1,
        page_size: PageSize = 20,
    ) -> FilePage:
        query = scoped(select(files), files.c.owner, request)
        count = scoped(select(func.count()).select_from(files), files.c.owner, request)
        if status is not None:
            query = query.where(files.c.status == status.value)
            count = count.where(files.c.status == status.value)
        query = query.order_by(files.c.registered_at.desc(), files.c.file_id)
        rows, total = await page_rows(read_after, query, count, page, page_size)
        return FilePage(
            items=[file_view(r) for r in rows], page=page, page_size=page_size, total=total
        )

    @get("/{file_id:str}", opt=READ, summary="One file: status, asset, refer key, recommendation")
    async def get_file(
        self, request: Request[Any, Any, Any], read_after: ReadAfter, file_id: FromPath[str]
    ) -> FileView:
        return file_view(await file_row(read_after, file_id, request))

    @get(
        "/{file_id:str}/download",
        opt=READ,
        summary="The file's bytes (one Range honoured: 206, or 416 outside the file)",
    )
    async def download(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        blobs: Blobs,
        file_id: FromPath[str],
        range_header: RangeHeader = None,
    ) -> Stream:
        return stream_file(blobs, await file_row(read_after, file_id, request), range_header)

    @get(
        "/{file_id:str}/events",
        opt=LIVE_READ,
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
        aggregates: Aggregates,
        live: Live,
        file_id: FromPath[str],
        last_event_id: Annotated[
            int | None, HeaderParameter(name="Last-Event-ID", ge=0, le=MAX_SEQ, required=False)
        ] = None,
    ) -> ServerSentEvent:
        state, version = await aggregates.load(FILE, path_id(file_id))
        if version == 0 or not visible(request, state.owner or ""):
            raise ApiError(404, "file_not_found", f"File {file_id} not found")
        feed = live.open(request, FeedFilter("file", file_id), from_seq=(last_event_id or 0) + 1)

        async def render(event: RecordedEvent) -> ServerSentEventMessage | None:
            return sse_message(event)

        return sse_stream(feed, render)
