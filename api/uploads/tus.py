"""The tus 1.0.0 protocol on the wire: what its request headers say (version, offsets and
lengths, ``Upload-Metadata``, ``Upload-Checksum``, ``Upload-Concat``), the headers an answer
carries, and its refusals: the project's error envelope with ``Tus-Resumable`` and the statuses
tus fixes (409 offset, 410 expired or terminated, 412 version, 413 too long, 415 media type, 460
checksum)."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlparse

from litestar import Request, Response
from litestar.datastructures import ResponseHeader

from adapters.blob_store import OUT_OF_SPACE
from api.errors import EXCEPTION_HANDLERS, ApiError, error_response
from api.http import path_id
from api.routing import API_V1
from domain.base import DomainError
from domain.uploads import UploadState, UploadStatus
from handlers.errors import ErrorBody, describe
from handlers.uploads import CHECKSUM_ALGORITHMS, Checksum

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation,creation-with-upload,creation-defer-length,termination,checksum,concatenation,"
    "expiration"
)
CHUNK_MEDIA_TYPE = "application/offset+octet-stream"
# Where uploads live, as their URLs (``Location``, ``Upload-Concat``) name them.
PREFIX = f"{API_V1}/uploads"
# tus fixes these statuses where the domain's kind of refusal would answer another one.
TUS_STATUS = {
    "upload_exceeds_length": 413,
    "upload_too_large": 413,
    "checksum_mismatch": 460,
    "upload_is_final": 403,
    "upload_parts_unfinished": 400,
    "upload_not_partial": 400,
    "upload_parts_repeated": 400,
    "upload_too_many_parts": 400,
    "storage_quota_exceeded": 413,
}
_METADATA_KEY = re.compile(r"^[!-+\--~]+$")  # printable ASCII without space or comma
STORAGE_FULL = ErrorBody(
    status=507,
    code="insufficient_storage",
    message="The server's storage is full and this request's bytes were not kept: an upload "
    "keeps its recorded offset, so resume it (HEAD, then PATCH) later; a final upload was given "
    "up, so create it again later",
)

log = logging.getLogger(__name__)


HEADERS = {
    "Tus-Resumable": f"The protocol version: {TUS_VERSION}",
    "Tus-Version": "The protocol versions this server speaks",
    "Tus-Extension": f"The extensions this server supports: {EXTENSIONS}",
    "Tus-Max-Size": "The largest upload this server accepts, in bytes",
    "Tus-Checksum-Algorithm": "The algorithms Upload-Checksum may name",
    "Location": "The upload's URL",
    "Upload-Offset": "How many bytes the upload holds",
    "Upload-Length": "The upload's length, once known",
    "Upload-Defer-Length": "1 while the upload's length is not known yet",
    "Upload-Metadata": "The upload's metadata: comma-separated `key base64(value)` pairs",
    "Upload-Concat": "`partial`, or `final;<urls of its parts>`",
    "Upload-Expires": "When an unfinished upload expires (RFC 9110 date)",
    "Cache-Control": "no-store: an upload's offset is never cached",
}


def documented(*names: str) -> list[ResponseHeader]:
    """The OpenAPI description of the tus headers an answer carries."""
    return [ResponseHeader(name=n, description=HEADERS[n], documentation_only=True) for n in names]


def tus_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, **(extra or {})}


def state_headers(state: UploadState) -> dict[str, str]:
    headers = tus_headers({"Upload-Offset": str(state.offset), "Cache-Control": "no-store"})
    if state.status is UploadStatus.UPLOADING and state.expires_at is not None:
        headers["Upload-Expires"] = format_datetime(state.expires_at, usegmt=True)
    return headers


def bad_header(message: str) -> ApiError:
    return ApiError(400, "invalid_upload_header", message)


def require_tus(request: Request[Any, Any, Any]) -> None:
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise ApiError(
            412,
            "unsupported_tus_version",
            f"This server speaks tus {TUS_VERSION} only (send Tus-Resumable: {TUS_VERSION})",
            {"Tus-Version": TUS_VERSION},
        )


def int_header(request: Request[Any, Any, Any], name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    # ASCII digits only ("²".isdigit() is true and int() refuses it) and at most 19 of them,
    # so the value fits the 64-bit integers of the event store and the database.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise bad_header(f"{name} must be a non-negative integer")
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
        raise bad_header("Upload-Checksum must be '<algorithm> <base64 digest>'") from error
    if len(digest) not in ((20,) if algorithm == "sha1" else (8, 16)):
        raise bad_header(f"an {algorithm} digest cannot be {len(digest)} bytes long")
    return Checksum(algorithm, digest)


def part_id(url: str) -> str:
    """The upload an ``Upload-Concat`` URL names, which must be one of this server's."""
    path = urlparse(url).path.rstrip("/")
    if not path.startswith(f"{PREFIX}/"):
        raise bad_header(f"Upload-Concat names {url!r}, which is not an upload of this server")
    return path_id(path.removeprefix(f"{PREFIX}/"))


def location(request: Request[Any, Any, Any], upload_id: str) -> str:
    return f"{str(request.base_url).rstrip('/')}{PREFIX}/{upload_id}"


def has_body(request: Request[Any, Any, Any]) -> bool:
    length = request.headers.get("Content-Length")
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "")
    return chunked or (length is not None and length != "0")


def require_chunk_type(request: Request[Any, Any, Any]) -> None:
    media_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media_type != CHUNK_MEDIA_TYPE:
        raise ApiError(415, "unsupported_media_type", f"Chunks must be sent as {CHUNK_MEDIA_TYPE}")


def _with_tus(handler: Callable[..., Response[Any]]) -> Callable[..., Response[Any]]:
    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        if isinstance(exc, DomainError) and (body := describe(exc)) is not None:
            status = TUS_STATUS.get(exc.code, body.status)
            return error_response(body.model_copy(update={"status": status}), tus_headers())
        response = handler(request, exc)
        response.headers.update(tus_headers())
        return response

    return handle


def _storage_error(request: Request[Any, Any, Any], exc: OSError) -> Response[Any]:
    """A full disk is an operational condition, not a bug: the chunk path has already cut the
    staged object back to the recorded offset, so the client is told to retry later (507, which
    tus clients treat as retryable), and the log gets one line instead of a traceback."""
    if exc.errno not in OUT_OF_SPACE:
        return EXCEPTION_HANDLERS[Exception](request, exc)  # type: ignore[no-any-return]
    log.warning("%s %s: blob store full: %s", request.method, request.url.path, exc)
    return error_response(STORAGE_FULL, {"Retry-After": "30"})


TUS_HANDLERS: dict[type[Exception], Any] = {
    kind: _with_tus(h) for kind, h in {**EXCEPTION_HANDLERS, OSError: _storage_error}.items()
}
