"""The tus 1.0.0 resumable upload protocol under ``/api/v1/uploads/``, written by hand on Litestar.

Extensions: creation, creation-with-upload, creation-defer-length, termination, checksum (sha1,
xxh3), concatenation and expiration. The maintained Python tus servers (litestar-tus, tussi,
asgi-tus) keep an upload's state in their own files; here the upload is an event-sourced
aggregate and its bytes go to the project's blob store, so the protocol is implemented directly.

HEAD answers from the aggregate (the write side, through the repository), not from the uploads
projection: the offset is the precondition of the next PATCH, a tus client HEADs right after a
cut-off PATCH to learn where to resume, and it cannot ask for read-your-writes (it never sees a
stream sequence). Loading an upload reads only the events after the cached version, so it costs
one direct-get round trip. ``GET /uploads/{id}`` is the read model's view, with ``wait_for_seq``.

Every answer carries ``Tus-Resumable``; refusals use the project's error envelope with the
statuses tus fixes (409 offset, 410 expired or terminated, 412 version, 413 too long, 415 media
type, 460 checksum).
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlparse

from litestar import Controller, Request, Response, delete, get, head, patch, post, route
from litestar.enums import HttpMethod
from litestar.exceptions import InternalServerException
from litestar.params import FromPath
from sqlalchemy import select

from api import consistency
from api.errors import EXCEPTION_HANDLERS, ApiError, error_response
from api.http import (
    OPERATE,
    PUBLIC,
    READ,
    Rt,
    WaitForSeq,
    command_context,
    owner_for_new,
    owner_scope,
    path_id,
    utc,
)
from api.runtime import Runtime
from domain.base import DomainError, NotFound
from domain.uploads import UploadState, UploadStatus
from handlers.errors import ErrorBody, describe
from handlers.uploads import (
    CHECKSUM_ALGORITHMS,
    BodyInterrupted,
    Checksum,
    NewUpload,
    UploadLimits,
    concatenate,
    create_upload,
    current,
    receive_chunk,
    terminate,
)
from projections.uploads import UPLOADS, uploads

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation,creation-with-upload,creation-defer-length,termination,checksum,concatenation,"
    "expiration"
)
CHUNK_MEDIA_TYPE = "application/offset+octet-stream"
PREFIX = "/api/v1/uploads"
# tus fixes these statuses where the domain's kind of refusal would answer another one.
TUS_STATUS = {
    "upload_exceeds_length": 413,
    "upload_too_large": 413,
    "checksum_mismatch": 460,
    "upload_is_final": 403,
    "upload_parts_unfinished": 400,
    "upload_not_partial": 400,
}
_METADATA_KEY = re.compile(r"^[!-+\--~]+$")  # printable ASCII without space or comma
_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)
STORAGE_FULL = ErrorBody(
    status=507,
    code="insufficient_storage",
    message="The server's storage is full: this request's bytes were not kept and nothing was "
    "recorded; the upload keeps its offset, so resume it (HEAD, then PATCH) later",
)

log = logging.getLogger(__name__)


def _tus_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, **(extra or {})}


def _with_tus(handler: Callable[..., Response[Any]]) -> Callable[..., Response[Any]]:
    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        if isinstance(exc, DomainError) and (body := describe(exc)) is not None:
            status = TUS_STATUS.get(exc.code, body.status)
            return error_response(body.model_copy(update={"status": status}), _tus_headers())
        response = handler(request, exc)
        response.headers.update(_tus_headers())
        return response

    return handle


def _storage_error(request: Request[Any, Any, Any], exc: OSError) -> Response[Any]:
    """A full disk is an operational condition, not a bug: the chunk path has already cut the
    staged object back to the recorded offset, so the client is told to retry later (507, which
    tus clients treat as retryable), and the log gets one line instead of a traceback."""
    if exc.errno not in _OUT_OF_SPACE:
        return EXCEPTION_HANDLERS[Exception](request, exc)  # type: ignore[no-any-return]
    log.warning("%s %s: blob store full: %s", request.method, request.url.path, exc)
    return error_response(STORAGE_FULL, {"Retry-After": "30"})


def _bad_header(message: str) -> ApiError:
    return ApiError(400, "invalid_upload_header", message)


def _require_tus(request: Request[Any, Any, Any]) -> None:
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise ApiError(
            412,
            "unsupported_tus_version",
            f"This server speaks tus {TUS_VERSION} only (send Tus-Resumable: {TUS_VERSION})",
            {"Tus-Version": TUS_VERSION},
        )


def _int_header(request: Request[Any, Any, Any], name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise _bad_header(f"{name} must be a non-negative integer")
    return int(raw)


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64(value)`` pairs, the value optional."""
    if header is None or not header.strip():
        return {}
    metadata: dict[str, str] = {}
    for pair in header.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not _METADATA_KEY.match(key) or key in metadata or " " in encoded:
            raise _malformed_metadata(f"bad or repeated key {key!r}")
        try:
            metadata[key] = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as error:
            raise _malformed_metadata(f"the value of {key!r} is not base64 UTF-8") from error
    return metadata


def _malformed_metadata(detail: str) -> ApiError:
    return ApiError(400, "malformed_metadata", f"Upload-Metadata is malformed: {detail}")


def encode_metadata(metadata: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata)


def parse_checksum(header: str | None) -> Checksum | None:
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise ApiError(
            400,
            "unsupported_checksum_algorithm",
            f"Upload-Checksum algorithm must be one of {', '.join(CHECKSUM_ALGORITHMS)}",
        )
    try:
        digest = base64.b64decode(encoded, validate=True)
    except binascii.Error as error:
        raise _bad_header("Upload-Checksum must be '<algorithm> <base64 digest>'") from error
    if len(digest) not in ((20,) if algorithm == "sha1" else (8, 16)):
        raise _bad_header(f"an {algorithm} digest cannot be {len(digest)} bytes long")
    return Checksum(algorithm, digest)


def _part_id(url: str) -> str:
    path = urlparse(url).path.rstrip("/")
    if not path.startswith(f"{PREFIX}/"):
        raise _bad_header(f"Upload-Concat names {url!r}, which is not an upload of this server")
    return path_id(path.removeprefix(f"{PREFIX}/"))


def _location(request: Request[Any, Any, Any], upload_id: str) -> str:
    return f"{str(request.base_url).rstrip('/')}{PREFIX}/{upload_id}"


def _state_headers(state: UploadState) -> dict[str, str]:
    headers = _tus_headers({"Upload-Offset": str(state.offset), "Cache-Control": "no-store"})
    if state.status is UploadStatus.UPLOADING and state.expires_at is not None:
        headers["Upload-Expires"] = format_datetime(state.expires_at, usegmt=True)
    return headers


async def _body(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except InternalServerException as gone:  # Litestar's word for a disconnect mid-body
        raise BodyInterrupted(str(gone)) from gone


def _has_body(request: Request[Any, Any, Any]) -> bool:
    length = request.headers.get("Content-Length")
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "")
    return chunked or (length is not None and length != "0")


def _require_chunk_type(request: Request[Any, Any, Any]) -> None:
    media_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media_type != CHUNK_MEDIA_TYPE:
        raise ApiError(415, "unsupported_media_type", f"Chunks must be sent as {CHUNK_MEDIA_TYPE}")


def _limits(runtime: Runtime) -> UploadLimits:
    s = runtime.settings
    return UploadLimits(max_size=s.upload_max_size, lifetime_s=s.upload_expires_s)


async def _write(
    request: Request[Any, Any, Any], runtime: Runtime, upload_id: str, offset: int
) -> UploadState:
    return await receive_chunk(
        runtime.commands,
        runtime.blobs,
        upload_id,
        offset,
        _body(request),
        command_context(request, None),
        content_length=_int_header(request, "Content-Length"),
        upload_length=_int_header(request, "Upload-Length"),
        checksum=parse_checksum(request.headers.get("Upload-Checksum")),
        max_size=runtime.settings.upload_max_size,
    )


class UploadController(Controller):
    path = PREFIX
    tags = ["uploads"]
    request_max_body_size = None  # a chunk is bounded by its upload's length instead
    exception_handlers = {
        kind: _with_tus(h) for kind, h in {**EXCEPTION_HANDLERS, OSError: _storage_error}.items()
    }

    @route(["/", "/{upload_id:str}"], http_method=HttpMethod.OPTIONS, opt=PUBLIC, status_code=204)
    async def advertise(self, runtime: Rt) -> Response[None]:
        """What this tus server supports (no Tus-Resumable needed).

        The name sorts first on purpose: Litestar registers a controller's handlers in name order,
        and a path's automatic OPTIONS handler would replace one registered after it."""
        return Response(
            None,
            status_code=204,
            headers=_tus_headers(
                {
                    "Tus-Version": TUS_VERSION,
                    "Tus-Extension": EXTENSIONS,
                    "Tus-Max-Size": str(runtime.settings.upload_max_size),
                    "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
                }
            ),
        )

    @post(
        "/", opt=OPERATE, status_code=201, summary="Create an upload (tus creation, concatenation)"
    )
    async def create(self, request: Request[Any, Any, Any], runtime: Rt) -> Response[None]:
        _require_tus(request)
        metadata = parse_metadata(request.headers.get("Upload-Metadata"))
        concat = request.headers.get("Upload-Concat", "").strip()
        context = command_context(request, None)
        owner = owner_for_new(request, metadata.get("owner"))
        if concat.startswith("final;"):
            if "Upload-Length" in request.headers:
                raise _bad_header("A final upload takes its length from its parts")
            parts = [_part_id(url) for url in concat.removeprefix("final;").split()]
            if not parts:
                raise _bad_header("Upload-Concat: final; needs at least one partial upload")
            upload_id, state = await concatenate(
                runtime.commands, runtime.blobs, owner, parts, metadata, context, _limits(runtime)
            )
        else:
            if concat not in ("", "partial"):
                raise _bad_header("Upload-Concat must be 'partial' or 'final;<urls>'")
            length = _int_header(request, "Upload-Length")
            deferred = request.headers.get("Upload-Defer-Length")
            if (length is None) == (deferred != "1"):
                raise _bad_header("Send either Upload-Length or Upload-Defer-Length: 1")
            new = NewUpload(owner, length, partial=concat == "partial", metadata=metadata)
            upload_id, state = await create_upload(
                runtime.commands, runtime.blobs, new, context, _limits(runtime)
            )
            if _has_body(request):  # creation-with-upload
                _require_chunk_type(request)
                try:
                    state = await _write(request, runtime, upload_id, 0)
                except OSError as error:
                    # The upload is recorded: answering 507 would hide its Location and leave an
                    # orphan the client cannot resume. It is handed out at offset 0 instead, and
                    # the client's PATCH of the same bytes is told whether the disk has room.
                    if error.errno not in _OUT_OF_SPACE:
                        raise
                    log.warning(
                        "upload %s created; its first bytes did not fit: %s", upload_id, error
                    )
        headers = _state_headers(state)
        headers["Location"] = _location(request, upload_id)
        return Response(None, status_code=201, headers=headers)

    @head("/{upload_id:str}", opt=OPERATE, summary="Where an upload stands (tus core)")
    async def offset(
        self, request: Request[Any, Any, Any], runtime: Rt, upload_id: FromPath[str]
    ) -> Response[None]:
        _require_tus(request)
        state = await current(
            runtime.commands, runtime.blobs, path_id(upload_id), command_context(request, None)
        )
        headers = _state_headers(state)
        if state.length is None:
            headers["Upload-Defer-Length"] = "1"
        else:
            headers["Upload-Length"] = str(state.length)
        if state.metadata:
            headers["Upload-Metadata"] = encode_metadata(state.metadata)
        if state.parts:
            urls = " ".join(_location(request, part) for part in state.parts)
            headers["Upload-Concat"] = f"final;{urls}"
        elif state.partial:
            headers["Upload-Concat"] = "partial"
        return Response(None, status_code=200, headers=headers)

    @patch(
        "/{upload_id:str}",
        opt=OPERATE,
        status_code=204,
        summary="Append a chunk (tus core, checksum)",
    )
    async def append(
        self, request: Request[Any, Any, Any], runtime: Rt, upload_id: FromPath[str]
    ) -> Response[None]:
        _require_tus(request)
        _require_chunk_type(request)
        offset = _int_header(request, "Upload-Offset")
        if offset is None:
            raise _bad_header("Upload-Offset is required")
        state = await _write(request, runtime, path_id(upload_id), offset)
        return Response(None, status_code=204, headers=_state_headers(state))

    @delete(
        "/{upload_id:str}",
        opt=OPERATE,
        status_code=204,
        summary="Terminate an upload (tus termination)",
    )
    async def terminate(
        self, request: Request[Any, Any, Any], runtime: Rt, upload_id: FromPath[str]
    ) -> Response[None]:
        _require_tus(request)
        await terminate(
            runtime.commands, runtime.blobs, path_id(upload_id), command_context(request, None)
        )
        return Response(None, status_code=204, headers=_tus_headers())

    @get("/{upload_id:str}", opt=READ, summary="An upload as the read model has it")
    async def status(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        upload_id: FromPath[str],
        wait_for_seq: WaitForSeq = None,
    ) -> Response[dict[str, Any]]:
        if wait_for_seq:
            await consistency.wait_for_seq(runtime, (UPLOADS,), wait_for_seq)
        async with runtime.sessions() as session:
            row = (
                await session.execute(select(uploads).where(uploads.c.upload_id == upload_id))
            ).first()
        scope = owner_scope(request)
        if row is None or (scope is not None and row.owner != scope):
            raise NotFound("upload_not_found", f"Upload {upload_id} not found")
        m = row._mapping
        body = {
            "upload_id": m["upload_id"],
            "owner": m["owner"],
            "filename": m["filename"],
            "file_type": m["file_type"],
            "length": m["length"],
            "offset": m["offset"],
            "status": m["status"],
            "partial": bool(m["partial"]),
            "parts": json.loads(m["parts"]),
            "chunks": m["chunks"],
            "xxh3": m["xxh3"],
            "expires_at": utc(m["expires_at"]),
            "created_at": utc(m["created_at"]),
            "updated_at": utc(m["updated_at"]),
            "seq": m["last_seq"],
        }
        return Response(body, headers=_tus_headers())


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (UploadController,)
