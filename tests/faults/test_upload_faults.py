"""A full or stalled disk under a tus upload: the client gets a clear answer, the upload stays
resumable, and the stream never records a byte the disk did not keep.

The faults are injected where they happen, in the blob store: a ``LocalBlobStore`` subclass
installed on the running service's ``runtime.blobs`` (the HTTP path reads it per request) whose
staged writes fail with ``ENOSPC`` part-way through a chunk, or stall. NATS, SQL and the HTTP
server stay real. A last test fills a real filesystem (a small tmpfs mounted under the blob
folder) where this machine lets the tests mount one.

After each fault the stream is scanned message by message: every ``ChunkReceived`` must describe
bytes that are in the final blob at its offset, contiguously, and one ``UploadCompleted`` the
whole source.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import xxhash
from tusclient.client import TusClient

from adapters.blob_store import LocalBlobStore
from tests.conftest import Service
from tests.faults.harness import scan_stream
from tests.small_disk import tmpfs

pytestmark = pytest.mark.faults

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {**TUS, "Content-Type": "application/offset+octet-stream"}
KIB = 1024


class FullDisk(LocalBlobStore):
    """Staged writes succeed until ``free`` bytes are used, then the chunk that crosses it is
    written up to the limit and the write fails with ENOSPC, as a filling disk does. ``free =
    None`` is a disk with room again."""

    def __init__(self, root: Path, free: int | None) -> None:
        super().__init__(root)
        self.free = free
        self.failures = 0
        self.staged_at_failure: list[int] = []

    async def write_staged(self, key: str, offset: int, chunks: AsyncIterable[bytes]) -> None:
        await super().write_staged(key, offset, self._until_full(key, chunks))

    async def _until_full(self, key: str, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if self.free is not None and len(chunk) > self.free:
                if self.free:
                    yield chunk[: self.free]  # the part that still fits reaches the file
                self.free = 0
                self.failures += 1
                self.staged_at_failure.append(self.staged_size(key))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if self.free is not None:
                self.free -= len(chunk)
            yield chunk


class StalledDisk(LocalBlobStore):
    """Staged writes stall once ``stall_after`` bytes of a request are written, until released:
    the store (a busy disk, a network store) stops taking bytes without failing."""

    def __init__(self, root: Path, stall_after: int) -> None:
        super().__init__(root)
        self.stall_after = stall_after
        self.stalled = asyncio.Event()
        self.released = asyncio.Event()
        self.finished = asyncio.Event()

    async def write_staged(self, key: str, offset: int, chunks: AsyncIterable[bytes]) -> None:
        try:
            await super().write_staged(key, offset, self._stalling(chunks))
        finally:
            self.finished.set()

    async def _stalling(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        written = 0
        async for chunk in chunks:
            if written + len(chunk) > self.stall_after and not self.released.is_set():
                self.stalled.set()
                await self.released.wait()
            written += len(chunk)
            yield chunk


# ---------------------------------------------------------------- helpers


async def create(service: Service, length: int) -> str:
    answer = await service.http.post("/uploads/", headers={**TUS, "Upload-Length": str(length)})
    assert answer.status_code == 201, answer.text
    return answer.headers["Location"].rsplit("/", 1)[-1]


async def patch(service: Service, uid: str, offset: int, body: bytes) -> httpx.Response:
    return await service.http.patch(
        f"/uploads/{uid}", content=body, headers={**CHUNK, "Upload-Offset": str(offset)}
    )


async def recorded_offset(service: Service, uid: str) -> int:
    answer = await service.http.head(f"/uploads/{uid}", headers=TUS)
    assert answer.status_code == 200, answer.headers
    return int(answer.headers["Upload-Offset"])


def staged_bytes(service: Service, uid: str) -> bytes:
    path = service.runtime.blobs.root / ".staging" / uid
    return path.read_bytes() if path.exists() else b""


async def upload_events(service: Service, uid: str) -> list[tuple[str, dict[str, Any]]]:
    """The upload's events as an operator reads them: straight from the stream, in order."""
    settings = service.runtime.settings
    messages = await scan_stream(settings.nats_url or "", settings.stream, f"ev.upload.{uid}.*")
    return [(m.subject.rsplit(".", 1)[-1], m.body["payload"]) for m in messages]


def assert_stream_matches(events: list[tuple[str, dict[str, Any]]], source: bytes) -> None:
    """Every recorded chunk is the source's bytes at its offset, the chunks tile the source
    without gap or overlap, and one completion names the whole source."""
    chunks = [payload for kind, payload in events if kind == "ChunkReceived"]
    offset = 0
    for chunk in chunks:
        assert chunk["offset"] == offset, chunks
        piece = source[offset : offset + chunk["length"]]
        assert chunk["xxh3"] == xxhash.xxh3_128_hexdigest(piece), f"chunk at {offset} lies"
        offset += chunk["length"]
    assert offset == len(source)
    [completed] = [payload for kind, payload in events if kind == "UploadCompleted"]
    assert (completed["length"], completed["xxh3"]) == (
        len(source),
        xxhash.xxh3_128_hexdigest(source),
    )


def assert_insufficient_storage(answer: httpx.Response) -> None:
    assert answer.status_code == 507, answer.text
    assert answer.headers["Tus-Resumable"] == "1.0.0"
    assert int(answer.headers["Retry-After"]) > 0
    error = answer.json()["error"]
    assert (error["status"], error["code"]) == (507, "insufficient_storage")
    assert "Traceback" not in answer.text


def tus_resume(service: Service, uid: str, source: Path, chunk_size: int) -> int:
    """A real tus client picks the upload up where the server says it stands (HEAD)."""
    client = TusClient(
        f"{service.base_url}/api/v1/uploads/", headers={"X-API-Key": service.admin_key}
    )
    uploader = client.uploader(
        str(source), url=f"{service.base_url}/api/v1/uploads/{uid}", chunk_size=chunk_size
    )
    resumed_from = int(uploader.offset)
    uploader.upload()
    return resumed_from


async def stored(service: Service, uid: str) -> bytes:
    seq = await service.runtime.store.last_seq()
    row = (await service.http.get(f"/uploads/{uid}", params={"wait_for_seq": seq})).json()
    assert row["status"] == "completed", row
    return service.runtime.blobs.path(row["xxh3"]).read_bytes()


# ---------------------------------------------------------------- disk full (injected)


async def test_disk_full_mid_chunk_answers_507_records_nothing_and_resumes(
    service: Service, tmp_path: Path
) -> None:
    # Given an upload whose first 256 KiB are stored, on a disk with 100 KiB left after them
    data = os.urandom(1024 * KIB)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    disk = FullDisk(service.runtime.blobs.root, free=256 * KIB + 100 * KIB)
    service.runtime.blobs = disk
    uid = await create(service, len(data))
    assert (await patch(service, uid, 0, data[: 256 * KIB])).status_code == 204
    before = await service.runtime.store.last_seq()

    # When the next 512 KiB chunk fills the disk part-way through
    answer = await patch(service, uid, 256 * KIB, data[256 * KIB : 768 * KIB])

    # Then the client is told the storage is full (507, the envelope, retry later), ...
    assert_insufficient_storage(answer)
    assert disk.failures == 1
    assert disk.staged_at_failure[0] > 256 * KIB, "the fault did not hit mid-chunk"
    # ... the part of the chunk that reached the disk is dropped again, nothing is recorded, and
    # the upload still stands at its last recorded chunk
    assert await service.runtime.store.last_seq() == before
    assert await recorded_offset(service, uid) == 256 * KIB
    assert staged_bytes(service, uid) == data[: 256 * KIB]
    events = await upload_events(service, uid)
    assert [kind for kind, _ in events] == ["UploadCreated", "ChunkReceived"]

    # When the disk is still full, a retry is refused the same way and changes nothing
    assert_insufficient_storage(await patch(service, uid, 256 * KIB, data[256 * KIB :]))
    assert await recorded_offset(service, uid) == 256 * KIB

    # When space is back, a tus client resumes from the recorded offset and finishes
    disk.free = None
    resumed_from = await asyncio.to_thread(tus_resume, service, uid, source, 200 * KIB)

    # Then the stored blob is the source, and the stream describes exactly those bytes
    assert resumed_from == 256 * KIB
    assert await stored(service, uid) == data
    assert service.runtime.blobs.staged_size(uid) == 0
    assert_stream_matches(await upload_events(service, uid), data)


async def test_disk_full_during_creation_with_upload_still_hands_out_the_upload(
    service: Service,
) -> None:
    # Given a disk with 10 KiB left
    disk = FullDisk(service.runtime.blobs.root, free=10 * KIB)
    service.runtime.blobs = disk
    data = os.urandom(64 * KIB)

    # When a client creates an upload and sends its bytes in the same request
    answer = await service.http.post(
        "/uploads/", content=data, headers={**CHUNK, "Upload-Length": str(len(data))}
    )

    # Then the upload exists and the client learns where (201, Location), with offset 0: none of
    # the bytes were kept, and an orphan it cannot name is not left behind
    assert answer.status_code == 201, answer.text
    assert answer.headers["Upload-Offset"] == "0"
    uid = answer.headers["Location"].rsplit("/", 1)[-1]
    assert disk.failures == 1
    assert staged_bytes(service, uid) == b""
    assert [kind for kind, _ in await upload_events(service, uid)] == ["UploadCreated"]

    # When it sends them again while the disk is still full, it is told so
    assert_insufficient_storage(await patch(service, uid, 0, data))

    # When space is back, the PATCH completes the upload
    disk.free = None
    assert (await patch(service, uid, 0, data)).status_code == 204
    assert await stored(service, uid) == data
    assert_stream_matches(await upload_events(service, uid), data)


# ---------------------------------------------------------------- a stalled store


async def test_a_stalled_store_times_the_client_out_and_records_only_what_reached_disk(
    service: Service, tmp_path: Path
) -> None:
    # Given a store that stops taking bytes after 300 KiB of a request
    data = os.urandom(16 * 1024 * KIB)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    disk = StalledDisk(service.runtime.blobs.root, stall_after=300 * KIB)
    service.runtime.blobs = disk
    uid = await create(service, len(data))
    sent = 0

    async def slow_link() -> AsyncIterator[bytes]:
        """A client on a ~6 MB/s link: 16 MiB take longer than its patience."""
        nonlocal sent
        for start in range(0, len(data), 64 * KIB):
            sent += 64 * KIB  # handed to the connection (some of it may not leave)
            yield data[start : start + 64 * KIB]
            await asyncio.sleep(0.01)

    # When a client PATCHes the whole file with a deadline of its own (1 s), and gives up
    async with httpx.AsyncClient(
        base_url=f"{service.base_url}/api/v1", headers={"X-API-Key": service.admin_key}
    ) as impatient:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await impatient.patch(
                    f"/uploads/{uid}", content=slow_link(), headers={**CHUNK, "Upload-Offset": "0"}
                )
    assert disk.stalled.is_set()
    assert 300 * KIB < sent < len(data)

    # Then, while the write still hangs, the service answers: HEAD tells the recorded offset (0,
    # nothing is recorded before it is on disk) without waiting for the stalled request
    async with asyncio.timeout(2):
        assert await recorded_offset(service, uid) == 0
    assert [kind for kind, _ in await upload_events(service, uid)] == ["UploadCreated"]

    # When the store comes back, the abandoned request takes what had arrived and ends
    disk.released.set()
    async with asyncio.timeout(10):
        await disk.finished.wait()
        while (offset := await recorded_offset(service, uid)) == 0:
            await asyncio.sleep(0.02)

    # Then what is recorded is exactly what reached the staged file: a prefix of what was sent
    assert 300 * KIB < offset <= sent
    assert staged_bytes(service, uid) == data[:offset]
    [(kind, chunk)] = (await upload_events(service, uid))[1:]
    assert (kind, chunk["offset"], chunk["length"]) == ("ChunkReceived", 0, offset)

    # When a tus client resumes, it continues from there and the upload completes correctly
    resumed_from = await asyncio.to_thread(tus_resume, service, uid, source, 4 * 1024 * KIB)
    assert resumed_from == offset
    assert await stored(service, uid) == data
    assert_stream_matches(await upload_events(service, uid), data)


# ---------------------------------------------------------------- a real full filesystem


@pytest.fixture
def small_blob_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs where the service will keep its blobs (requested before the service, so it
    is unmounted after the service stops)."""
    with tmpfs(tmp_path / "blobs", 2 * 1024 * KIB) as mountpoint:
        yield mountpoint


def fill(path: Path, leave: int) -> None:
    """Fill the filesystem of ``path`` until about ``leave`` bytes are free."""
    stats = os.statvfs(path)
    free = stats.f_bavail * stats.f_frsize
    (path / "filler").write_bytes(b"\0" * (free - leave))


async def test_a_really_full_filesystem_refuses_then_resumes(
    small_blob_fs: Path, service: Service, tmp_path: Path
) -> None:
    # Given the service's blob folder on a real filesystem with about 128 KiB free
    assert service.runtime.blobs.root == small_blob_fs
    data = os.urandom(768 * KIB)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    fill(small_blob_fs, leave=128 * KIB)
    uid = await create(service, len(data))

    # When a 768 KiB PATCH runs out of space, the kernel's ENOSPC is a 507 and nothing is kept
    before = await service.runtime.store.last_seq()
    assert_insufficient_storage(await patch(service, uid, 0, data))
    assert await service.runtime.store.last_seq() == before
    assert await recorded_offset(service, uid) == 0
    assert staged_bytes(service, uid) == b""

    # When a chunk that fits is sent, it is stored and recorded while the disk stays nearly full
    assert (await patch(service, uid, 0, data[: 64 * KIB])).status_code == 204
    assert staged_bytes(service, uid) == data[: 64 * KIB]

    # When space is freed, a tus client resumes and completes the upload
    (small_blob_fs / "filler").unlink()
    resumed_from = await asyncio.to_thread(tus_resume, service, uid, source, 256 * KIB)
    assert resumed_from == 64 * KIB
    assert await stored(service, uid) == data
    assert_stream_matches(await upload_events(service, uid), data)
