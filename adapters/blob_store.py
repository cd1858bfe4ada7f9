"""Content-addressed blob storage for bytes that never go into events (logs, chunks, files).

Blobs are named by their xxh3-128 digest, so storing the same bytes twice keeps one copy. Writes
stream to a temporary file and are renamed into place, so a reader never sees half a blob. The
interface (``put_stream``, ``open``, ``exists``) is what an S3-compatible store would implement.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash


@dataclass(frozen=True)
class StoredBlob:
    digest: str
    size: int


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put_bytes(self, data: bytes) -> StoredBlob:
        digest = xxhash.xxh3_128_hexdigest(data)
        target = self.path(digest)
        if not target.exists():
            self._write_atomically(target, iter([data]))
        return StoredBlob(digest, len(data))

    async def put_stream(self, chunks: AsyncIterable[bytes]) -> StoredBlob:
        hasher = xxhash.xxh3_128()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    hasher.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            digest = hasher.hexdigest()
            target = self.path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        finally:
            _discard(tmp)
        return StoredBlob(digest, size)

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def _write_atomically(self, target: Path, chunks: Iterator[bytes]) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
            os.replace(tmp, target)
        finally:
            _discard(tmp)


def _discard(path: str) -> None:
    """Remove a temporary file left by a failed write (after a rename it is already gone)."""
    Path(path).unlink(missing_ok=True)
