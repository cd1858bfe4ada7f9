"""The tus routes of an upload: advertise, create (with concatenation and a first chunk),
where it stands (HEAD), append (PATCH), terminate, and the read model's view (GET)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, Response, delete, get, head, patch, post, route
from litestar.enums import HttpMethod
from litestar.exceptions import InternalServerException
from litestar.params import FromPath
from sqlalchemy import select

from adapters.blob_store import OUT_OF_SPACE, LocalBlobStore
from api.answers import Answer, Instant
from api.dependencies import AppSettings, Blobs, Commands, ReadAfter, read_after
from api.http import OPERATE, PUBLIC, READ, command_context, owner_for_new, owner_scope, path_id
from api.settings import Settings
from api.uploads.tus import (
    EXTENSIONS,
    TUS_HANDLERS,
    TUS_VERSION,
    bad_header,
    documented,
    encode_metadata,
    has_body,
    int_header,
    location,
    parse_checksum,
    parse_metadata,
    part_id,
    require_chunk_type,
    require_tus,
    state_headers,
    tus_headers,
)
from domain.base import NotFound
from domain.uploads import UploadState
from handlers.commands import CommandService
from handlers.uploads import (
    CHECKSUM_ALGORITHMS,
    BodyInterrupted,
    NewUpload,
    UploadLimits,
    concatenate,
    create_upload,
    current,
    receive_chunk,
    terminate,
)
from projections.uploads import UPLOADS, uploads

log = logging.getLogger(__name__)


class UploadView(Answer):
    upload_id: str
    owner: str
    filename: str | None
    file_type: str | None
    length: int | None
    offset: int
    status: str
    partial: bool
    parts: list[str]
    chunks: int
    xxh3: str | None
    expires_at: Instant | None
    created_at: Instant
    updated_at: Instant
    seq: int


async def _body(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except InternalServerException as gone:  # Litestar's word for a disconnect mid-body
        raise BodyInterrupted(str(gone)) from gone


def _limits(settings: Settings) -> UploadLimits:
    return UploadLimits(
        max_size=settings.upload_max_size,
        lifetime_s=settings.upload_expires_s,
        quota=settings.user_storage_quota_bytes,
    )


async def _write(
    request: Request[Any, Any, Any],
    commands: CommandService,
    blobs: LocalBlobStore,
    settings: Settings,
    upload_id: str,
    offset: int,
) -> UploadState:
    return await receive_chunk(
        commands,
        blobs,
        upload_id,
        offset,
        _body(request),
        command_context(request, None),
        content_length=int_header(request, "Content-Length"),
        upload_length=int_header(request, "Upload-Length"),
        checksum=parse_checksum(request.headers.get("Upload-Checksum")),
        limits=_limits(settings),
    )


class UploadController(Controller):
    path = "/uploads"
    tags = ["uploads"]
    request_max_body_size = None  # a chunk is bounded by its upload's length instead
    exception_handlers = TUS_HANDLERS
    dependencies = {"read_after": read_after(UPLOADS)}

    @route(
        ["/", "/{upload_id:str}"],
        http_method=HttpMethod.OPTIONS,
        opt=PUBLIC,
        status_code=204,
        response_headers=documented(
            "Tus-Resumable",
            "Tus-Version",
            "Tus-Extension",
            "Tus-Max-Size",
            "Tus-Checksum-Algorithm",
        ),
    )
    async def advertise(self, settings: AppSettings) -> Response[None]:
        """What this tus server supports (no Tus-Resumable needed).

        The name sorts first on purpose: Litestar registers a controller's handlers in name order,
        and a path's automatic OPTIONS handler would replace one registered after it."""
        return Response(
            None,
            status_code=204,
            headers=tus_headers(
                {
                    "Tus-Version": TUS_VERSION,
                    "Tus-Extension": EXTENSIONS,
                    "Tus-Max-Size": str(settings.upload_max_size),
                    "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
                }
            ),
        )

    @post(
        "/",
        opt=OPERATE,
        status_code=201,
        summary="Create an upload (tus creation, concatenation)",
        response_headers=documented(
            "Location", "Tus-Resumable", "Upload-Offset", "Upload-Expires", "Cache-Control"
        ),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        blobs: Blobs,
        settings: AppSettings,
    ) -> Response[None]:
        require_tus(request)
        metadata = parse_metadata(request.headers.get("Upload-Metadata"))
        concat = request.headers.get("Upload-Concat", "").strip()
        context = command_context(request, None)
        owner = owner_for_new(request, metadata.get("owner"))
        if concat.startswith("final;"):
            if "Upload-Length" in request.headers:
                raise bad_header("A final upload takes its length from its parts")
            parts = [part_id(url) for url in concat.removeprefix("final;").split()]
            if not parts:
                raise bad_header("Upload-Concat: final; needs at least one partial upload")
            upload_id, state = await concatenate(
                commands, blobs, owner, parts, metadata, context, _limits(settings)
            )
        else:
            if concat not in ("", "partial"):
                raise bad_header("Upload-Concat must be 'partial' or 'final;<urls>'")
            length = int_header(request, "Upload-Length")
            deferred = request.headers.get("Upload-Defer-Length")
            if (length is None) == (deferred != "1"):
                raise bad_header("Send either Upload-Length or Upload-Defer-Length: 1")
            new = NewUpload(owner, length, partial=concat == "partial", metadata=metadata)
            upload_id, state = await create_upload(commands, blobs, new, context, _limits(settings))
            if has_body(request):  # creation-with-upload
                require_chunk_type(request)
                try:
                    state = await _write(request, commands, blobs, settings, upload_id, 0)
                except OSError as error:
                    # The upload is recorded: answering 507 would hide its Location and leave an
                    # orphan the client cannot resume. It is handed out at offset 0 instead, and
                    # the client's PATCH of the same bytes is told whether the disk has room.
                    if error.errno not in OUT_OF_SPACE:
                        raise
                    log.warning(
                        "upload %s created; its first bytes did not fit: %s", upload_id, error
                    )
        headers = state_headers(state)
        headers["Location"] = location(request, upload_id)
        return Response(None, status_code=201, headers=headers)

    @head(
        "/{upload_id:str}",
        opt=OPERATE,
        summary="Where an upload stands (tus core)",
        response_headers=documented(
            "Tus-Resumable",
            "Upload-Offset",
            "Upload-Length",
            "Upload-Defer-Length",
            "Upload-Metadata",
            "Upload-Concat",
            "Upload-Expires",
            "Cache-Control",
        ),
    )
    async def offset(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        blobs: Blobs,
        upload_id: FromPath[str],
    ) -> Response[None]:
        require_tus(request)
        state = await current(commands, blobs, path_id(upload_id), command_context(request, None))
        headers = state_headers(state)
        if state.length is None:
            headers["Upload-Defer-Length"] = "1"
        else:
            headers["Upload-Length"] = str(state.length)
        if state.metadata:
            headers["Upload-Metadata"] = encode_metadata(state.metadata)
        if state.parts:
            urls = " ".join(location(request, part) for part in state.parts)
            headers["Upload-Concat"] = f"final;{urls}"
        elif state.partial:
            headers["Upload-Concat"] = "partial"
        return Response(None, status_code=200, headers=headers)

    @patch(
        "/{upload_id:str}",
        opt=OPERATE,
        status_code=204,
        summary="Append a chunk (tus core, checksum)",
        response_headers=documented(
            "Tus-Resumable", "Upload-Offset", "Upload-Expires", "Cache-Control"
        ),
    )
    async def append(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        blobs: Blobs,
        settings: AppSettings,
        upload_id: FromPath[str],
    ) -> Response[None]:
        require_tus(request)
        require_chunk_type(request)
        offset = int_header(request, "Upload-Offset")
        if offset is None:
            raise bad_header("Upload-Offset is required")
        state = await _write(request, commands, blobs, settings, path_id(upload_id), offset)
        return Response(None, status_code=204, headers=state_headers(state))

    @delete(
        "/{upload_id:str}",
        opt=OPERATE,
        status_code=204,
        summary="Terminate an upload (tus termination)",
        response_headers=documented("Tus-Resumable"),
    )
    async def terminate(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        blobs: Blobs,
        upload_id: FromPath[str],
    ) -> Response[None]:
        require_tus(request)
        await terminate(commands, blobs, path_id(upload_id), command_context(request, None))
        return Response(None, status_code=204, headers=tus_headers())

    @get(
        "/{upload_id:str}",
        opt=READ,
        summary="An upload as the read model has it",
        response_headers=documented("Tus-Resumable"),
    )
    async def status(
        self, request: Request[Any, Any, Any], read_after: ReadAfter, upload_id: FromPath[str]
    ) -> Response[UploadView]:
        async with read_after() as session:
            row = (
                await session.execute(select(uploads).where(uploads.c.upload_id == upload_id))
            ).first()
        scope = owner_scope(request)
        if row is None or (scope is not None and row.owner != scope):
            raise NotFound("upload_not_found", f"Upload {upload_id} not found")
        m = row._mapping
        view = UploadView(
            upload_id=m["upload_id"],
            owner=m["owner"],
            filename=m["filename"],
            file_type=m["file_type"],
            length=m["length"],
            offset=m["offset"],
            status=m["status"],
            partial=bool(m["partial"]),
            parts=json.loads(m["parts"]),
            chunks=m["chunks"],
            xxh3=m["xxh3"],
            expires_at=m["expires_at"],
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            seq=m["last_seq"],
        )
        return Response(view, headers=tus_headers())
