"""tus 1.0.0 uploads end to end: real tus clients (tuspy, tus-js-client) against the real server,
resuming after a cut, concatenation of parallel parts, checksums, termination, expiry, and every
refusal with its status, error code and an untouched event stream."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import xxhash
from tusclient.client import TusClient
from tusclient.storage.filestorage import FileStorage

from domain.uploads import CompleteUpload, RecordChunk
from handlers.ports import EventStoreError
from tests.conftest import Service

JS_DIR = Path(__file__).parent / "js"
TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {**TUS, "Content-Type": "application/offset+octet-stream"}
ServiceFactory = Callable[..., Awaitable[Service]]


@pytest.fixture(scope="session")
def tus_js_client() -> Path:
    """tus-js-client from tests/js/package-lock.json; ``npm ci`` only when the lock changed."""
    installed = JS_DIR / "node_modules" / ".package-lock.json"
    lock = JS_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=JS_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return JS_DIR / "upload.mjs"


def endpoint(service: Service) -> str:
    return f"{service.base_url}/api/v1/uploads/"


def upload_id(url: str) -> str:
    return urlparse(url).path.rsplit("/", 1)[-1]


def source_file(tmp_path: Path, size: int, name: str = "source.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def create(service: Service, length: int | None, **headers: str) -> str:
    sizing = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    answer = await service.http.post("/uploads/", headers={**TUS, **sizing, **headers})
    assert answer.status_code == 201, answer.text
    assert answer.headers["Tus-Resumable"] == "1.0.0"
    location = answer.headers["Location"]
    assert location.startswith(f"{service.base_url}/api/v1/uploads/")
    return upload_id(location)


async def send(
    service: Service, uid: str, offset: int, body: bytes, **headers: str
) -> dict[str, Any]:
    answer = await service.http.patch(
        f"/uploads/{uid}", content=body, headers={**CHUNK, "Upload-Offset": str(offset), **headers}
    )
    return {"status": answer.status_code, "headers": answer.headers, "text": answer.text}


async def head(service: Service, uid: str) -> Any:
    return await service.http.head(f"/uploads/{uid}", headers=TUS)


async def read_model(service: Service, uid: str) -> dict[str, Any]:
    seq = await service.runtime.store.last_seq()
    answer = await service.http.get(f"/uploads/{uid}", params={"wait_for_seq": seq})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def stored_bytes(service: Service, uid: str) -> bytes:
    row = await read_model(service, uid)
    assert row["status"] == "completed", row
    return service.runtime.blobs.path(row["xxh3"]).read_bytes()


async def events_of(service: Service, kind: str = ">") -> list[Any]:
    return await service.runtime.store.read_subject(f"ev.upload.{kind}")


async def refused(
    service: Service, method: str, path: str, status: int, code: str, **kwargs: Any
) -> None:
    # Upload events only: other process managers (the files slice) react to completed uploads.
    before = len(await events_of(service))
    answer = await service.http.request(method, path, **kwargs)
    assert answer.status_code == status, answer.text
    assert answer.headers["Tus-Resumable"] == "1.0.0"
    if method != "HEAD":
        error = answer.json()["error"]
        assert (error["status"], error["code"]) == (status, code), error
    assert len(await events_of(service)) == before, "a refused request appended events"


# ---------------------------------------------------------------- real clients


@pytest.mark.shared_stack
async def test_options_advertise_the_protocol(service: Service) -> None:
    answer = await service.http.options("/uploads/")
    assert answer.status_code == 204
    assert answer.headers["Tus-Version"] == "1.0.0"
    assert answer.headers["Tus-Resumable"] == "1.0.0"
    assert answer.headers["Tus-Checksum-Algorithm"] == "sha1,xxh3"
    assert int(answer.headers["Tus-Max-Size"]) == service.runtime.settings.upload_max_size
    extensions = set(answer.headers["Tus-Extension"].split(","))
    wanted = {"creation", "creation-with-upload", "termination", "checksum", "concatenation"}
    assert wanted | {"expiration", "creation-defer-length"} <= extensions


async def test_tuspy_uploads_in_chunks_then_resumes_a_cut_upload(
    service: Service, tmp_path: Path
) -> None:
    source = source_file(tmp_path, 3 * 1024 * 1024 + 123)
    client = TusClient(
        endpoint(service), headers={"X-API-Key": await service.key("operator", "ann")}
    )
    uploader = client.uploader(
        str(source), chunk_size=256 * 1024, metadata={"filename": "a.bin", "owner": "alice"},
        upload_checksum=True,
    )  # fmt: skip
    await asyncio.to_thread(uploader.upload)
    uid = upload_id(uploader.url)
    assert await stored_bytes(service, uid) == source.read_bytes()
    row = await read_model(service, uid)
    # the owner is whoever's key uploads; metadata cannot name another (only an admin's could)
    assert (row["owner"], row["filename"], row["chunks"]) == ("ann", "a.bin", 13)
    chunks = await events_of(service, f"{uid}.ChunkReceived")
    assert [c.payload["offset"] for c in chunks] == [i * 256 * 1024 for i in range(13)]
    data = source.read_bytes()
    first = chunks[0].payload
    assert first["xxh3"] == xxhash.xxh3_128_hexdigest(data[: first["length"]])
    [completed] = await events_of(service, f"{uid}.UploadCompleted")
    assert completed.payload["xxh3"] == xxhash.xxh3_128_hexdigest(data)

    # A second file: the client stops after 5 chunks (a cut), a new client resumes it.
    second = source_file(tmp_path, 2 * 1024 * 1024, "second.bin")
    urls = FileStorage(str(tmp_path / "tus-urls.json"))
    cut = client.uploader(str(second), chunk_size=200 * 1024, store_url=True, url_storage=urls)
    await asyncio.to_thread(cut.upload, 5 * 200 * 1024)
    assert int((await head(service, upload_id(cut.url))).headers["Upload-Offset"]) == 1024000
    resumed = await asyncio.to_thread(
        client.uploader, str(second), chunk_size=200 * 1024, store_url=True, url_storage=urls
    )
    assert resumed.url == cut.url
    assert resumed.offset == 1024000  # learned from HEAD
    await asyncio.to_thread(resumed.upload)
    assert await stored_bytes(service, upload_id(cut.url)) == second.read_bytes()


async def test_a_connection_dropped_mid_patch_keeps_what_arrived_and_tuspy_resumes(
    service: Service, tmp_path: Path
) -> None:
    source = source_file(tmp_path, 1024 * 1024)
    uid = await create(service, 1024 * 1024)
    port = urlparse(service.base_url).port
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"PATCH /api/v1/uploads/{uid} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
        f"X-API-Key: {service.admin_key}\r\n"
        "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
        f"Content-Length: {1024 * 1024}\r\n\r\n".encode()
    )
    writer.write(source.read_bytes()[: 300 * 1024])
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()  # the connection drops mid-body
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    offset = 0
    for _ in range(100):
        if offset := int((await head(service, uid)).headers["Upload-Offset"]):
            break
        await asyncio.sleep(0.05)
    assert 0 < offset <= 300 * 1024
    assert service.runtime.blobs.staged_size(uid) == offset
    client = TusClient(endpoint(service), headers={"X-API-Key": service.admin_key})
    resumed = await asyncio.to_thread(
        client.uploader, str(source), url=f"{endpoint(service)}{uid}", chunk_size=400 * 1024
    )
    assert resumed.offset == offset
    await asyncio.to_thread(resumed.upload)
    assert await stored_bytes(service, uid) == source.read_bytes()


async def test_tus_js_client_parallel_uploads_are_concatenated(
    service: Service, tmp_path: Path, tus_js_client: Path
) -> None:
    source = source_file(tmp_path, 5 * 1024 * 1024 + 7)
    node = await asyncio.create_subprocess_exec(
        "node", str(tus_js_client), endpoint(service), str(source), "8",
        env={**os.environ, "JETFLOW_API_KEY": await service.key("operator", "ann")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(node.communicate(), 120)
    assert node.returncode == 0, err.decode()
    final = upload_id(out.decode().strip())
    assert await stored_bytes(service, final) == source.read_bytes()
    created = [e.payload for e in await events_of(service, "*.UploadCreated")]
    partials = [c for c in created if c["partial"]]
    [finals] = [c for c in created if c["parts"]]
    assert len(partials) == 8 and len(created) == 9
    assert finals["upload_id"] == final
    # The parts are created concurrently; the stored bytes above prove their order.
    assert sorted(finals["parts"]) == sorted(p["upload_id"] for p in partials)
    assert finals["filename"] == "source.bin"
    head_final = await head(service, final)
    assert head_final.headers["Upload-Concat"].startswith("final;")
    assert head_final.headers["Upload-Offset"] == str(5 * 1024 * 1024 + 7)


# ---------------------------------------------------------------- protocol details


async def test_checksums_sha1_and_xxh3_are_verified(service: Service) -> None:
    uid = await create(service, 300)
    body = os.urandom(100)
    sha1 = base64.b64encode(hashlib.sha1(body).digest()).decode()
    assert (await send(service, uid, 0, body, **{"Upload-Checksum": f"sha1 {sha1}"}))[
        "status"
    ] == 204
    body = os.urandom(100)
    xxh = base64.b64encode(xxhash.xxh3_128_digest(body)).decode()
    assert (await send(service, uid, 100, body, **{"Upload-Checksum": f"xxh3 {xxh}"}))[
        "status"
    ] == 204
    body = os.urandom(50)
    xxh64 = base64.b64encode(xxhash.xxh3_64_digest(body)).decode()
    assert (await send(service, uid, 200, body, **{"Upload-Checksum": f"xxh3 {xxh64}"}))[
        "status"
    ] == 204
    wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    await refused(
        service, "PATCH", f"/uploads/{uid}", 460, "checksum_mismatch", content=os.urandom(50),
        headers={**CHUNK, "Upload-Offset": "250", "Upload-Checksum": f"sha1 {wrong}"},
    )  # fmt: skip
    assert service.runtime.blobs.staged_size(uid) == 250
    assert (await head(service, uid)).headers["Upload-Offset"] == "250"


async def test_deferred_length_and_creation_with_upload(service: Service) -> None:
    uid = await create(service, None)
    assert (await head(service, uid)).headers["Upload-Defer-Length"] == "1"
    assert (await send(service, uid, 0, b"a" * 10))["status"] == 204
    done = await send(service, uid, 10, b"b" * 5, **{"Upload-Length": "15"})
    assert done["status"] == 204 and done["headers"]["Upload-Offset"] == "15"
    assert await stored_bytes(service, uid) == b"a" * 10 + b"b" * 5

    answer = await service.http.post(
        "/uploads/", content=b"hello",
        headers={**CHUNK, "Upload-Length": "5", "Upload-Metadata": f"filename {b64('h.txt')}"},
    )  # fmt: skip
    assert answer.status_code == 201 and answer.headers["Upload-Offset"] == "5"
    again = upload_id(answer.headers["Location"])
    assert await stored_bytes(service, again) == b"hello"
    assert (await head(service, again)).headers["Upload-Metadata"] == f"filename {b64('h.txt')}"


async def test_same_content_is_stored_once_and_empty_uploads_complete(service: Service) -> None:
    body = os.urandom(1000)
    first, second = await create(service, 1000), await create(service, 1000)
    for uid in (first, second):
        assert (await send(service, uid, 0, body))["status"] == 204
    digest = (await read_model(service, first))["xxh3"]
    assert (await read_model(service, second))["xxh3"] == digest
    blobs = [p for p in service.runtime.blobs.root.rglob("*") if p.is_file()]
    assert blobs == [service.runtime.blobs.path(digest)]
    empty = await create(service, 0)
    assert await stored_bytes(service, empty) == b""


async def test_racing_patches_at_one_offset_append_once(service: Service) -> None:
    uid = await create(service, 2 * 1024 * 1024)
    bodies = [os.urandom(1024 * 1024), os.urandom(1024 * 1024)]
    answers = await asyncio.gather(*(send(service, uid, 0, b) for b in bodies))
    assert sorted(a["status"] for a in answers) == [204, 409]
    assert len(await events_of(service, f"{uid}.ChunkReceived")) == 1
    winner = bodies[[a["status"] for a in answers].index(204)]
    assert (await send(service, uid, 1024 * 1024, bodies[0]))["status"] == 204
    assert await stored_bytes(service, uid) == winner + bodies[0]


async def test_a_failed_append_leaves_no_bytes_and_a_cut_completion_is_finished_by_head(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = service.runtime.commands
    execute = commands.execute
    failures = {RecordChunk: 1, CompleteUpload: 1}

    async def flaky(aggregate: Any, aggregate_id: str, command: Any, *args: Any, **kw: Any) -> Any:
        if failures.get(type(command)):
            failures[type(command)] -= 1
            raise EventStoreError("injected: the stream is unreachable")
        return await execute(aggregate, aggregate_id, command, *args, **kw)

    monkeypatch.setattr(commands, "execute", flaky)
    uid = await create(service, 100)
    body = os.urandom(100)
    assert (await send(service, uid, 0, body[:50]))["status"] == 500
    assert service.runtime.blobs.staged_size(uid) == 0
    assert (await head(service, uid)).headers["Upload-Offset"] == "0"
    assert (await send(service, uid, 0, body[:50]))["status"] == 204
    # The last chunk is recorded, then recording the completion fails (a crash right there).
    assert (await send(service, uid, 50, body[50:]))["status"] == 500
    assert len(await events_of(service, f"{uid}.UploadCompleted")) == 0
    answer = await head(service, uid)
    assert answer.status_code == 200 and answer.headers["Upload-Offset"] == "100"
    assert len(await events_of(service, f"{uid}.UploadCompleted")) == 1
    assert await stored_bytes(service, uid) == body
    assert service.runtime.blobs.staged_size(uid) == 0


async def test_termination(service: Service) -> None:
    uid = await create(service, 100)
    assert (await send(service, uid, 0, b"x" * 40))["status"] == 204
    answer = await service.http.delete(f"/uploads/{uid}", headers=TUS)
    assert answer.status_code == 204 and answer.headers["Tus-Resumable"] == "1.0.0"
    assert service.runtime.blobs.staged_size(uid) == 0
    await refused(service, "HEAD", f"/uploads/{uid}", 410, "upload_terminated", headers=TUS)
    await refused(
        service, "PATCH", f"/uploads/{uid}", 410, "upload_terminated", content=b"y",
        headers={**CHUNK, "Upload-Offset": "40"},
    )  # fmt: skip
    assert (await read_model(service, uid))["status"] == "terminated"


async def test_expiry_answers_410_and_the_timer_records_it(
    service_factory: ServiceFactory,
) -> None:
    service = await service_factory(upload_expires_s=1.0)
    uid = await create(service, 100)
    answer = await send(service, uid, 0, b"x" * 10)
    assert answer["status"] == 204 and "GMT" in answer["headers"]["Upload-Expires"]
    for _ in range(100):
        if (await read_model(service, uid))["status"] == "expired":
            break
        await asyncio.sleep(0.1)
    assert (await read_model(service, uid))["status"] == "expired"
    assert len(await events_of(service, f"{uid}.UploadExpired")) == 1
    assert service.runtime.blobs.staged_size(uid) == 0
    await refused(
        service, "PATCH", f"/uploads/{uid}", 410, "upload_expired", content=b"y",
        headers={**CHUNK, "Upload-Offset": "10"},
    )  # fmt: skip


async def test_expired_before_the_timer_runs_is_already_gone(
    service_factory: ServiceFactory,
) -> None:
    service = await service_factory(upload_expires_s=0.5, timers=False)
    uid = await create(service, 100)
    await asyncio.sleep(0.6)
    await refused(service, "HEAD", f"/uploads/{uid}", 410, "upload_expired", headers=TUS)
    await refused(
        service, "PATCH", f"/uploads/{uid}", 410, "upload_expired", content=b"y",
        headers={**CHUNK, "Upload-Offset": "0"},
    )  # fmt: skip


# ---------------------------------------------------------------- refusals


async def test_bad_input_is_refused_and_appends_nothing(service: Service) -> None:
    uid = await create(service, 10)
    assert (await send(service, uid, 0, b"12345"))["status"] == 204
    patch = f"/uploads/{uid}"
    at5 = {**CHUNK, "Upload-Offset": "5"}
    await refused(
        service, "PATCH", patch, 409, "upload_offset_mismatch", content=b"67",
        headers={**CHUNK, "Upload-Offset": "3"},
    )  # fmt: skip
    await refused(
        service, "PATCH", patch, 413, "upload_exceeds_length", content=b"6789ab", headers=at5
    )
    await refused(
        service, "PATCH", patch, 415, "unsupported_media_type", content=b"67",
        headers={**TUS, "Upload-Offset": "5", "Content-Type": "application/octet-stream"},
    )  # fmt: skip
    await refused(
        service, "PATCH", patch, 415, "unsupported_media_type", content=b"67",
        headers={**TUS, "Upload-Offset": "5"},
    )  # fmt: skip
    await refused(
        service, "PATCH", patch, 412, "unsupported_tus_version", content=b"67",
        headers={**at5, "Tus-Resumable": "0.2.2"},
    )  # fmt: skip
    await refused(
        service, "PATCH", patch, 400, "invalid_upload_header", content=b"67",
        headers={**CHUNK, "Upload-Offset": "-1"},
    )  # fmt: skip
    await refused(
        service, "PATCH", patch, 400, "unsupported_checksum_algorithm", content=b"67",
        headers={**at5, "Upload-Checksum": "md5 AAAA"},
    )  # fmt: skip
    await refused(
        service, "PATCH", "/uploads/no-such-upload", 404, "upload_not_found", content=b"67",
        headers=at5,
    )  # fmt: skip
    await refused(service, "HEAD", "/uploads/no-such-upload", 404, "upload_not_found", headers=TUS)
    await refused(
        service, "DELETE", "/uploads/no-such-upload", 404, "upload_not_found", headers=TUS
    )
    assert service.runtime.blobs.staged_size(uid) == 5

    for metadata in ("filename !!!", "a b c", "filename x,filename y", "k /w==="):
        await refused(
            service, "POST", "/uploads/", 400, "malformed_metadata",
            headers={**TUS, "Upload-Length": "5", "Upload-Metadata": metadata},
        )  # fmt: skip
    await refused(service, "POST", "/uploads/", 400, "invalid_upload_header", headers=TUS)
    await refused(
        service, "POST", "/uploads/", 413, "upload_too_large",
        headers={**TUS, "Upload-Length": str(service.runtime.settings.upload_max_size + 1)},
    )  # fmt: skip
    await refused(
        service, "POST", "/uploads/", 412, "unsupported_tus_version",
        headers={"Upload-Length": "5"},
    )  # fmt: skip
    part = await create(service, 10, **{"Upload-Concat": "partial"})
    await refused(
        service, "POST", "/uploads/", 400, "upload_parts_unfinished",
        headers={**TUS, "Upload-Concat": f"final;{endpoint(service)}{part}"},
    )  # fmt: skip
    assert (await send(service, uid, 5, b"67890"))["status"] == 204
    await refused(
        service, "POST", "/uploads/", 400, "upload_not_partial",
        headers={**TUS, "Upload-Concat": f"final;{endpoint(service)}{uid}"},
    )  # fmt: skip


async def test_a_chunked_body_past_the_length_is_cut_off_and_truncated(service: Service) -> None:
    uid = await create(service, 100_000)

    async def body() -> Any:
        for _ in range(4):
            yield b"z" * 40_000

    await refused(
        service, "PATCH", f"/uploads/{uid}", 413, "upload_exceeds_length", content=body(),
        headers={**CHUNK, "Upload-Offset": "0"},
    )  # fmt: skip
    assert service.runtime.blobs.staged_size(uid) == 0
    assert (await read_model(service, uid))["offset"] == 0
