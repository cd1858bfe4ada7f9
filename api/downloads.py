"""Streaming a stored blob over HTTP, whole or one byte range (RFC 9110 section 14).

The bytes are read from the blob store in chunks as the client takes them, never whole into
memory. One range per request is honoured; a header this server does not honour (several ranges,
another unit, bad syntax) is ignored as the RFC allows, and the whole file is sent.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import anyio
from litestar.response import Stream

from api.errors import ApiError

CHUNK = 256 * 1024
# The uploader chose the Content-Type, so a blob is shown inline only when no browser would run
# it (images, audio, video, PDF, plain text); anything else, text/html and SVG first, is a
# download. The API's origin must never render an uploaded page.
_INLINE = re.compile(
    r"^(image/(png|jpeg|gif|webp|avif|bmp)|audio/[\w.+-]+|video/[\w.+-]+|application/pdf|text/plain)$"
)
# Sent with every blob, whatever its type: no sniffing, no scripts, no frames, no plugins.
_SAFETY = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte positions asked for, or None for the whole file."""
    if not header:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        if int(last) == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - int(last)), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # syntactically invalid: ignored
    if start >= size:
        raise _unsatisfiable(size)
    return start, min(end, size - 1)


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"The requested range is outside the file's {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )


async def _chunks(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as handle:
        await handle.seek(start)
        remaining = length
        while remaining > 0:
            chunk = await handle.read(min(CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


def blob_response(
    path: Path,
    *,
    range_header: str | None,
    digest: str,
    filename: str | None,
    media_type: str | None,
) -> Stream:
    """A 200 with the whole blob, or a 206 with the one range asked for."""
    if not path.is_file():
        raise ApiError(404, "file_content_missing", "The file's bytes are not in the blob store")
    size = path.stat().st_size
    wanted = parse_range(range_header, size)
    start, end = wanted if wanted is not None else (0, size - 1)
    length = end - start + 1 if size else 0
    media = (media_type or "application/octet-stream").split(";")[0].strip().lower()
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(length),
        "ETag": f'"{digest}"',
        **_SAFETY,
    }
    disposition = "inline" if _INLINE.match(media) else "attachment"
    if filename:
        disposition += f"; filename*=UTF-8''{quote(filename, safe='')}"
    headers["Content-Disposition"] = disposition
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Stream(
        _chunks(path, start, length),
        status_code=206 if wanted is not None else 200,
        headers=headers,
        media_type=media_type or "application/octet-stream",
    )
