"""Content-addressed blob storage for bytes that never go into events (logs, chunks, files).

Blobs are named by their xxh3-128 digest, so storing the same bytes twice keeps one copy. Writes
stream to a temporary file and are renamed into place, so a reader never sees half a blob.

Resumable uploads grow a *staged* object chunk by chunk under a key (the upload id) before it
becomes a blob. ``BlobStore`` is the interface the services use; an S3-compatible store could
implement it (staging as a multipart upload, ``compose_staged`` with part copies).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import AsyncIterable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import xxhash

READ_SIZE = 1024 * 1024
STAGING = ".staging"
# How a write tells that the store has no room (the disk, or the service user's disk quota).
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class StoredBlob:
    digest: str
    size: int


class StagedBytesMissing(RuntimeError):
    """A staged object is shorter than the events say it is: its storage lost bytes."""


class BlobStore(Protocol):
    def exists(self, digest: str) -> bool: ...

    def read(self, digest: str) -> bytes: ...

    def put_bytes(self, data: bytes) -> StoredBlob: ...

    def compose_staged(self, key: str, digests: Iterable[str]) -> None:
        """Make a staged object the concatenation of existing blobs (whatever it held before).

        If writing fails part-way, the staged object is removed: nothing of it is left behind."""
        ...

    def staged_size(self, key: str) -> int: ...

    async def write_staged(self, key: str, offset: int, chunks: AsyncIterable[bytes]) -> None:
        """Write ``chunks`` at ``offset`` of a staged object, dropping anything beyond it first.

        Bytes written before ``chunks`` raises stay; the caller truncates them if it must."""
        ...

    def truncate_staged(self, key: str, size: int) -> None:
        """Drop the bytes of a staged object beyond ``size``."""
        ...

    def commit_staged(self, key: str) -> StoredBlob:
        """Store a staged object's bytes as a blob; the staged object stays until discarded,
        so a crash before the caller records the blob can commit it again."""
        ...

    def discard_staged(self, key: str) -> None: ...


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
        if self.exists(digest):
            return StoredBlob(digest, len(data))
        return self._store([data])

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    # ------------------------------------------------------------ staged objects

    def _staged(self, key: str) -> Path:
        return self.root / STAGING / key

    def staged_size(self, key: str) -> int:
        try:
            return self._staged(key).stat().st_size
        except FileNotFoundError:
            return 0

    async def write_staged(self, key: str, offset: int, chunks: AsyncIterable[bytes]) -> None:
        path = self._staged(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+b") as out:
            if out.seek(0, os.SEEK_END) < offset:
                raise StagedBytesMissing(f"staged {key} holds fewer than {offset} bytes")
            out.truncate(offset)
            out.seek(offset)
            async for chunk in chunks:
                out.write(chunk)

    def compose_staged(self, key: str, digests: Iterable[str]) -> None:
        path = self._staged(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        written = False
        try:
            with open(path, "wb") as out:
                for digest in digests:
                    for chunk in _read_chunks(self.path(digest)):
                        out.write(chunk)
            written = True
        finally:
            if not written:
                path.unlink(missing_ok=True)

    def truncate_staged(self, key: str, size: int) -> None:
        if self.staged_size(key) > size:  # never grow it: that would invent zero bytes
            os.truncate(self._staged(key), size)

    def commit_staged(self, key: str) -> StoredBlob:
        staged = self._staged(key)
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.touch()  # an empty upload never wrote a byte
        hasher = xxhash.xxh3_128()
        size = 0
        for chunk in _read_chunks(staged):
            hasher.update(chunk)
            size += len(chunk)
        digest = hasher.hexdigest()
        target = self.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        # A hard link publishes the complete file under its name at once; an existing blob of
        # the same digest already holds these bytes.
        with contextlib.suppress(FileExistsError):
            os.link(staged, target)
        return StoredBlob(digest, size)

    def discard_staged(self, key: str) -> None:
        self._staged(key).unlink(missing_ok=True)

    def _store(self, chunks: Iterable[bytes]) -> StoredBlob:
        """Write to a temporary file, hashing on the way, then rename it to its digest."""
        hasher = xxhash.xxh3_128()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
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


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as source:
        while chunk := source.read(READ_SIZE):
            yield chunk


def _discard(path: str) -> None:
    """Remove a temporary file left by a failed write (after a rename it is already gone)."""
    Path(path).unlink(missing_ok=True)
