"""Files end to end: upload events (appended through the real command path, bytes in the real
blob store) become files; dedup, check-hashes, listing, ranged downloads, refer keys (rotation,
consumption, expiry, re-issue, holder limit), the per-file SSE feed, comments, the violation
catalogue and recommendations, all through NATS, SQL and the served HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from adapters.envelope import Metadata
from cli.violations import load_violations_file
from domain.base import DomainError
from domain.contents import CONTENT
from domain.files import (
    FILE,
    FileProcessingStarted,
    FileRegistered,
    FileStored,
    ReferKeyIssued,
    RotateReferKey,
)
from domain.uploads import (
    UPLOAD,
    CompleteUpload,
    CreateUpload,
    ExpireUpload,
    RecordChunk,
    TerminateUpload,
)
from handlers.commands import CommandContext, CommandService
from handlers.files import claim_content
from tests.conftest import Service

ServiceFactory = Callable[..., Awaitable[Service]]
CLIENT = CommandContext(Metadata(actor="test:uploader"))
DATA = b"".join(i.to_bytes(2, "big") for i in range(5000))  # 10,000 bytes, no two runs alike


def _now() -> datetime:
    return datetime.now(UTC)


async def create_upload(
    service: Service,
    length: int,
    *,
    partial: bool = False,
    expires_at: datetime | None = None,
    filename: str = "clip.mp4",
) -> str:
    upload_id = f"up_{uuid.uuid4().hex[:12]}"
    create = CreateUpload(
        upload_id=upload_id,
        owner="alice",
        filename=filename,
        file_type="video/mp4",
        length=length,
        partial=partial,
        expires_at=expires_at,
        metadata={"source": "test"},
        max_size=10**9,
    )
    await service.runtime.commands.execute(UPLOAD, upload_id, create, CLIENT)
    return upload_id


async def finish_upload(service: Service, upload_id: str, data: bytes) -> str:
    """Put the bytes into the blob store and record them, as the tus endpoints do."""
    rt = service.runtime
    stored = rt.blobs.put_bytes(data)
    chunk = RecordChunk(
        upload_id=upload_id, offset=0, length=len(data), xxh3=stored.digest, at=_now()
    )
    await rt.commands.execute(UPLOAD, upload_id, chunk, CLIENT)
    done = CompleteUpload(upload_id=upload_id, length=len(data), xxh3=stored.digest, at=_now())
    await rt.commands.execute(UPLOAD, upload_id, done, CLIENT)
    return stored.digest


async def upload(service: Service, data: bytes = DATA, **kwargs: Any) -> str:
    upload_id = await create_upload(service, len(data), **kwargs)
    await finish_upload(service, upload_id, data)
    return upload_id


async def file_view(service: Service, file_id: str) -> httpx.Response:
    seq = await service.runtime.store.last_seq()
    return await service.http.get(f"/files/{file_id}", params={"wait_for_seq": seq})


async def wait_file(
    service: Service, file_id: str, check: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> dict[str, Any]:
    """Poll until the file satisfies ``check``: the process managers work asynchronously."""
    deadline = asyncio.get_running_loop().time() + timeout
    body: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        answer = await file_view(service, file_id)
        if answer.status_code == 200:
            body = answer.json()
            if check(body):
                return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"file {file_id} never got there; last seen {body}")


def has_status(status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body["status"] == status


async def event_types(service: Service, aggregate: str, aggregate_id: str) -> list[str]:
    return [e.type for e in await service.runtime.store.history(aggregate, aggregate_id)]


async def refused(
    service: Service, method: str, path: str, status: int, code: str, **kwargs: Any
) -> dict[str, Any]:
    before = await service.runtime.store.last_seq()
    answer = await service.http.request(method, path, **kwargs)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert await service.runtime.store.last_seq() == before, "a refused request appended events"
    return dict(body["error"])


# ---------------------------------------------------------------- lifecycle


async def test_a_file_goes_pending_processing_ready_then_db_ready(service: Service) -> None:
    file_id = await create_upload(service, len(DATA))
    pending = await wait_file(service, file_id, has_status("pending"))
    assert pending["filename"] == "clip.mp4" and pending["owner"] == "alice"

    digest = await finish_upload(service, file_id, DATA)
    ready = await wait_file(service, file_id, has_status("ready"))
    assert ready["hash"] == digest
    assert ready["storage_path"] == f"assets/{digest}"
    assert ready["asset_id"] and not ready["deduplicated"]
    assert ready["refer"]["state"] == "live"
    assert await event_types(service, "file", file_id) == [
        "FileRegistered",
        "FileProcessingStarted",
        "FileStored",
        "ReferKeyIssued",
    ]

    first = await service.http.post(
        f"/files/{file_id}/recommendations",
        json={"text": "no violations found", "user_comment": "ok", "analyser_comment": "clean"},
    )
    assert first.status_code == 202, first.text
    second = await service.http.post(
        f"/files/{file_id}/recommendations",
        json={
            "text": "mild smoking",
            "violation_severity": "mild",
            "violation_categories": ["smoking"],
        },
    )
    assert second.status_code == 202, second.text
    done = (
        await service.http.get(f"/files/{file_id}", params={"wait_for_seq": second.json()["seq"]})
    ).json()
    assert done["status"] == "db_ready"
    assert done["recommendation"]["text"] == "mild smoking"
    assert done["recommendation"]["categories"] == ["smoking"]


async def test_an_upload_that_dies_unfinished_leaves_its_file_in_error(service: Service) -> None:
    terminated = await create_upload(service, 100)
    await wait_file(service, terminated, has_status("pending"))
    await service.runtime.commands.execute(
        UPLOAD, terminated, TerminateUpload(upload_id=terminated), CLIENT
    )
    failed = await wait_file(service, terminated, has_status("error"))
    assert "terminated" in failed["error"]

    expired = await create_upload(service, 100, expires_at=_now() + timedelta(milliseconds=200))
    await asyncio.sleep(0.3)
    with contextlib.suppress(DomainError):  # the uploads timer may have expired it already
        await service.runtime.commands.execute(
            UPLOAD, expired, ExpireUpload(upload_id=expired, at=_now()), CLIENT
        )
    failed = await wait_file(service, expired, has_status("error"))
    assert "expired" in failed["error"]
    await refused(service, "GET", f"/files/{expired}/download", 409, "file_not_ready")
    await refused(service, "POST", f"/files/{expired}/refer-key", 409, "file_not_ready")


async def test_partial_uploads_are_not_files(service: Service) -> None:
    part = await upload(service, b"first half", partial=True)
    marker = await upload(service, b"a regular one")
    await wait_file(service, marker, has_status("ready"))  # the tracker is past the partial one
    await refused(service, "GET", f"/files/{part}", 404, "file_not_found")


# ---------------------------------------------------------------- content


async def test_the_same_bytes_twice_are_stored_once_and_found_by_hash(service: Service) -> None:
    data = uuid.uuid4().bytes * 100
    first = await upload(service, data)
    second = await upload(service, data)
    one = await wait_file(service, first, has_status("ready"))
    two = await wait_file(service, second, has_status("ready"))
    assert two["deduplicated"] and not one["deduplicated"]
    assert two["asset_id"] == one["asset_id"]
    assert two["storage_path"] == one["storage_path"] == f"assets/{one['hash']}"
    assert "FileDeduplicated" in await event_types(service, "file", second)
    assert await event_types(service, "content", one["hash"]) == [
        "ContentStored",
        "ContentReferenced",
    ]
    assert len(list(service.runtime.blobs.root.rglob(one["hash"]))) == 1

    unknown = "0" * 32
    answer = await service.http.post(
        "/files/check-hashes",
        json={"hashes": [one["hash"].upper(), unknown]},
        params={"wait_for_seq": await service.runtime.store.last_seq()},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "existing": [
            {
                "hash": one["hash"],
                "asset_id": one["asset_id"],
                "storage_path": f"assets/{one['hash']}",
                "size": len(data),
            }
        ],
        "missing": [unknown],
    }
    await refused(
        service, "POST", "/files/check-hashes", 422, "validation_error", json={"hashes": []}
    )


async def test_racing_claims_of_one_digest_store_it_exactly_once(service: Service) -> None:
    """Two processes (two command services, each with its own cache) claim at the same moment."""
    rt = service.runtime
    digest = rt.blobs.put_bytes(uuid.uuid4().bytes).digest
    services = [CommandService(rt.store, rt.commands.idempotency) for _ in range(4)]
    results = await asyncio.gather(
        *(claim_content(c, f"file_{i}", digest, 16) for i, c in enumerate(services))
    )
    assert len({asset for asset, _ in results}) == 1
    assert sorted(dedup for _, dedup in results) == [False, True, True, True]
    history = await event_types(service, CONTENT.name, digest)
    assert history.count("ContentStored") == 1 and history.count("ContentReferenced") == 3


async def test_files_are_listed_in_pages_and_by_status(service: Service) -> None:
    ready = [await upload(service, uuid.uuid4().bytes) for _ in range(3)]
    pending = await create_upload(service, 10)
    for file_id in ready:
        await wait_file(service, file_id, has_status("ready"))
    await wait_file(service, pending, has_status("pending"))

    page1 = (await service.http.get("/files", params={"page": 1, "page_size": 3})).json()
    page2 = (await service.http.get("/files", params={"page": 2, "page_size": 3})).json()
    assert page1["total"] == page2["total"] == 4
    assert len(page1["items"]) == 3 and len(page2["items"]) == 1
    listed = {f["file_id"] for f in page1["items"] + page2["items"]}
    assert listed == {*ready, pending}
    only_ready = (await service.http.get("/files", params={"status": "ready"})).json()
    assert {f["file_id"] for f in only_ready["items"]} == set(ready)
    await refused(service, "GET", "/files", 422, "validation_error", params={"status": "lost"})


async def test_downloads_honour_one_range(service: Service) -> None:
    file_id = await upload(service)
    await wait_file(service, file_id, has_status("ready"))
    path = f"/files/{file_id}/download"

    whole = await service.http.get(path)
    assert whole.status_code == 200 and whole.content == DATA
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-length"] == str(len(DATA))

    part = await service.http.get(path, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == DATA[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(DATA)}"

    tail = await service.http.get(path, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == DATA[-10:]
    open_ended = await service.http.get(path, headers={"Range": "bytes=9990-"})
    assert open_ended.content == DATA[9990:]
    several = await service.http.get(path, headers={"Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.content == DATA  # ignored, as RFC 9110 allows

    error = await refused(
        service, "GET", path, 416, "range_not_satisfiable", headers={"Range": "bytes=10000-"}
    )
    assert "10000" in error["message"]
    answer = await service.http.get(path, headers={"Range": "bytes=20000-20010"})
    assert answer.headers["content-range"] == f"bytes */{len(DATA)}"
    await refused(service, "GET", "/files/nope/download", 404, "file_not_found")


# ---------------------------------------------------------------- refer keys


_KEYS: dict[tuple[int, str], str] = {}


async def as_user(service: Service, user: str) -> dict[str, str]:
    """Headers of an analyser's viewer key: a refer key counts its authenticated users."""
    cached = _KEYS.get((id(service), user))
    if cached is None:
        cached = _KEYS[(id(service), user)] = await service.key("viewer", user)
    return {"X-API-Key": cached}


async def download_by_key(service: Service, key: str, user: str) -> httpx.Response:
    return await service.http.get(f"/download/{key}", headers=await as_user(service, user))


async def test_refer_keys_rotate_stop_when_consumed_expire_and_are_reissued(
    service_factory: ServiceFactory,
) -> None:
    service = await service_factory(refer_rotate_s=0.5, refer_max_s=3.0)
    file_id = await upload(service)
    first = (await wait_file(service, file_id, has_status("ready")))["refer"]["refer_key"]
    second = (await wait_file(service, file_id, lambda f: f["refer"]["refer_key"] != first))[
        "refer"
    ]["refer_key"]
    assert "ReferKeyRotated" in await event_types(service, "file", file_id)

    gone = await refused(
        service,
        "GET",
        f"/download/{first}",
        410,
        "refer_key_superseded",
        headers=await as_user(service, "analyser-1"),
    )
    assert gone["message"]
    for _ in range(5):  # the key may rotate between reading it and using it
        current = (await file_view(service, file_id)).json()["refer"]["refer_key"]
        answer = await download_by_key(service, current, "analyser-1")
        if answer.status_code != 410:
            break
    assert answer.status_code == 200, answer.text
    assert answer.content == DATA
    consumed = await wait_file(service, file_id, lambda f: f["refer"]["state"] == "consumed")
    assert consumed["refer"]["refer_key"] == current
    await asyncio.sleep(1.2)  # rotation would have happened twice by now
    assert (await file_view(service, file_id)).json()["refer"]["refer_key"] == current

    await wait_file(service, file_id, lambda f: f["refer"]["state"] == "expired", timeout=6)
    await refused(
        service,
        "GET",
        f"/download/{current}",
        410,
        "refer_key_expired",
        headers=await as_user(service, "analyser-1"),
    )

    reissued = await service.http.post(f"/files/{file_id}/refer-key")
    assert reissued.status_code == 202, reissued.text
    fresh = reissued.json()["refer_key"]
    assert fresh not in (first, second, current)
    assert reissued.json()["download_url"] == f"/api/v1/download/{fresh}"
    await refused(service, "POST", f"/files/{file_id}/refer-key", 409, "refer_key_live")
    ranged = await service.http.get(
        f"/download/{fresh}", headers={**await as_user(service, "analyser-2"), "Range": "bytes=0-9"}
    )
    assert ranged.status_code == 206 and ranged.content == DATA[:10]
    await refused(
        service,
        "GET",
        f"/download/{current}",
        410,
        "refer_key_superseded",
        headers=await as_user(service, "analyser-1"),
    )
    history = await event_types(service, "file", file_id)
    assert history.count("ReferKeyConsumed") == 2 and history.count("ReferKeyExpired") == 1


async def test_at_most_ten_users_hold_a_refer_key(service: Service) -> None:
    file_id = await upload(service)
    key = (await wait_file(service, file_id, has_status("ready")))["refer"]["refer_key"]
    for n in range(10):
        answer = await download_by_key(service, key, f"user-{n}")
        assert answer.status_code == 200, answer.text
    error = await refused(
        service,
        "GET",
        f"/download/{key}",
        429,
        "refer_key_holder_limit",
        headers=await as_user(service, "user-10"),
    )
    assert "10" in error["message"]
    again = await download_by_key(service, key, "user-3")  # a holder downloads again
    assert again.status_code == 200

    released = await service.http.delete(f"/files/{file_id}/refer-key/holders/user-3")
    assert released.status_code == 202, released.text
    assert (await download_by_key(service, key, "user-10")).status_code == 200
    await refused(
        service,
        "GET",
        f"/download/{key}",
        429,
        "refer_key_holder_limit",
        headers=await as_user(service, "user-3"),
    )
    await refused(
        service, "DELETE", f"/files/{file_id}/refer-key/holders/user-3", 404, "holder_not_found"
    )
    holders = (await file_view(service, file_id)).json()["refer"]["holders"]
    assert len(holders) == 10 and "user-3" not in holders
    await refused(
        service,
        "GET",
        "/download/not-a-key-at-all-xyz",
        404,
        "refer_key_not_found",
        headers=await as_user(service, "user-1"),
    )


def test_a_stale_or_early_rotation_is_refused_by_the_aggregate() -> None:
    """Two timers that saw the same key: the second rotation names an old generation."""
    at = _now()
    state = FILE.fold(
        [
            FileRegistered(
                file_id="f",
                owner="o",
                filename=None,
                file_type=None,
                length=1,
                metadata={},
                registered_at=at,
            ),
            FileProcessingStarted(file_id="f", length=1, xxh3="0" * 32),
            FileStored(file_id="f", asset_id="a", storage_path="assets/x"),
            ReferKeyIssued(
                file_id="f",
                refer_key="k" * 20,
                generation=1,
                issued_at=at,
                expires_at=at + timedelta(seconds=90),
                chain_ends_at=at + timedelta(seconds=600),
            ),
        ]
    )

    def rotate(generation: int, seconds: float) -> RotateReferKey:
        when = at + timedelta(seconds=seconds)
        return RotateReferKey(
            file_id="f", generation=generation, refer_key="n" * 20, rotate_s=90, at=when
        )

    with pytest.raises(DomainError) as early:
        FILE.decide(state, rotate(1, 30))
    assert early.value.code == "refer_key_not_due"
    [rotated] = FILE.decide(state, rotate(1, 91))
    state = FILE.evolve(state, rotated)
    with pytest.raises(DomainError) as stale:
        FILE.decide(state, rotate(1, 182))
    assert stale.value.code == "refer_key_stale"


# ---------------------------------------------------------------- SSE


async def read_events(
    service: Service,
    file_id: str,
    until: Callable[[list[ServerSentEvent]], bool],
    headers: dict[str, str] | None = None,
) -> list[ServerSentEvent]:
    received: list[ServerSentEvent] = []
    async with (
        httpx.AsyncClient(
            base_url=service.base_url, timeout=10, headers={"X-API-Key": service.admin_key}
        ) as client,
        aconnect_sse(
            client, "GET", f"/api/v1/files/{file_id}/events", headers=headers or {}
        ) as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for message in source.aiter_sse():
            received.append(message)
            if until(received):
                break
    return received


def rotated(messages: list[ServerSentEvent]) -> bool:
    return any(json.loads(m.data)["event"] == "ReferKeyRotated" for m in messages)


async def test_the_file_feed_pushes_statuses_and_rotated_keys_and_resumes(
    service_factory: ServiceFactory,
) -> None:
    service = await service_factory(refer_rotate_s=0.5, refer_max_s=30.0)
    file_id = await create_upload(service, len(DATA))
    reader = asyncio.create_task(read_events(service, file_id, rotated))
    await asyncio.sleep(0.3)
    await finish_upload(service, file_id, DATA)
    seen = await asyncio.wait_for(reader, 15)

    statuses = [json.loads(m.data)["status"] for m in seen if m.event == "status"]
    assert statuses == ["pending", "processing", "ready"]
    keys = [json.loads(m.data) for m in seen if m.event == "refer_key"]
    assert [k["event"] for k in keys] == ["ReferKeyIssued", "ReferKeyRotated"]
    assert keys[1]["download_url"] == f"/api/v1/download/{keys[1]['refer_key']}"
    ids = [int(m.id) for m in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    # Disconnected; the key rotates meanwhile; the client comes back with Last-Event-ID.
    await asyncio.sleep(1.2)
    resumed = await asyncio.wait_for(
        read_events(service, file_id, lambda m: len(m) >= 2, {"Last-Event-ID": seen[-1].id}), 10
    )
    recorded = [
        e.seq
        for e in await service.runtime.store.history("file", file_id)
        if e.seq > ids[-1] and e.type == "ReferKeyRotated"
    ]
    assert [int(m.id) for m in resumed] == recorded[:2]
    assert all(json.loads(m.data)["event"] == "ReferKeyRotated" for m in resumed)

    # An open feed ends when the service begins to close, so shutdown does not wait for it.
    open_feed = asyncio.create_task(read_events(service, file_id, lambda m: False))
    await asyncio.sleep(0.3)
    service.runtime.closing.set()
    await asyncio.wait_for(open_feed, 5)
    await refused(service, "GET", "/files/nope/events", 404, "file_not_found")


# ---------------------------------------------------------------- comments and catalogue


async def test_comments_cite_categories_from_the_catalogue(service: Service) -> None:
    file_id = await upload(service)
    await wait_file(service, file_id, has_status("ready"))
    path = f"/files/{file_id}/comments"
    by_user = await service.http.post(
        path,
        json={
            "author_kind": "user",
            "author": "alice",
            "text": "a scene with smoking at 01:02",
            "violation_severity": "moderate",
            "violation_categories": ["smoking", "drugs"],
        },
    )
    assert by_user.status_code == 202, by_user.text
    by_ai = await service.http.post(
        path, json={"author_kind": "analyser", "author": "wink-ai", "text": "nothing else"}
    )
    assert by_ai.status_code == 202
    listed = (await service.http.get(path, params={"wait_for_seq": by_ai.json()["seq"]})).json()
    assert [(c["author_kind"], c["violation_severity"]) for c in listed] == [
        ("user", "moderate"),
        ("analyser", "none"),
    ]
    assert listed[0]["violation_categories"] == ["drugs", "smoking"]

    body = {"author_kind": "user", "author": "bob", "text": "x"}
    error = await refused(
        service,
        "POST",
        path,
        422,
        "unknown_violation_category",
        json={**body, "violation_categories": ["smoking", "piracy"]},
    )
    assert error["fields"][0]["field"] == "violation_categories" and "piracy" in error["message"]
    error = await refused(
        service, "POST", path, 422, "validation_error", json={**body, "violation_severity": "huge"}
    )
    assert any("violation_severity" in f["field"] for f in error["fields"])
    await refused(
        service, "POST", path, 422, "validation_error", json={**body, "author_kind": "bot"}
    )
    await refused(service, "POST", "/files/nope/comments", 404, "file_not_found", json=body)
    await refused(service, "GET", "/files/nope/comments", 404, "file_not_found")
    await refused(
        service, "POST", "/files/nope/recommendations", 404, "file_not_found", json={"text": "x"}
    )


async def test_recommendations_wait_for_a_stored_file(service: Service) -> None:
    file_id = await create_upload(service, 10)
    await wait_file(service, file_id, has_status("pending"))
    await refused(
        service,
        "POST",
        f"/files/{file_id}/recommendations",
        409,
        "file_not_ready",
        json={"text": "too early"},
    )


async def test_the_catalogue_is_seeded_loaded_from_csv_and_edited(
    service: Service, tmp_path: Path
) -> None:
    seq = await service.runtime.store.last_seq()
    seeded = (await service.http.get("/violations", params={"wait_for_seq": seq})).json()
    assert {"drugs", "smoking", "violence"} <= {v["code"] for v in seeded}

    csv = tmp_path / "violations.csv"
    csv.write_text(
        "code,name,description\n"
        "drugs,Наркотики,changed description\n"
        "piracy,Пиратство,copyright\n"
        'smoking,Курение табака,"Демонстрация процесса курения (ст. 16 ФЗ № 15-ФЗ)"\n',
        encoding="utf-8",
    )
    settings = service.runtime.settings
    assert await load_violations_file(settings, csv) == 0
    history = await event_types(service, "violations", "catalogue")
    assert await load_violations_file(settings, csv) == 0  # idempotent: nothing new
    assert await event_types(service, "violations", "catalogue") == history
    seq = await service.runtime.store.last_seq()
    piracy = (await service.http.get("/violations/piracy", params={"wait_for_seq": seq})).json()
    assert piracy["name"] == "Пиратство"
    drugs = (await service.http.get("/violations/drugs")).json()
    assert drugs["description"] == "changed description"

    added = await service.http.post(
        "/violations/", json={"code": "spoilers", "name": "Spoilers", "description": "plot"}
    )
    assert added.status_code == 202, added.text
    await refused(
        service,
        "POST",
        "/violations/",
        409,
        "violation_exists",
        json={"code": "spoilers", "name": "x"},
    )
    changed = await service.http.put("/violations/spoilers", json={"name": "Plot spoilers"})
    assert changed.status_code == 202
    await refused(
        service, "PUT", "/violations/unknown", 404, "violation_not_found", json={"name": "x"}
    )
    removed = await service.http.delete("/violations/piracy")
    assert removed.status_code == 202
    await refused(service, "DELETE", "/violations/piracy", 404, "violation_not_found")
    seq = removed.json()["seq"]
    codes = {
        v["code"]: v
        for v in (await service.http.get("/violations", params={"wait_for_seq": seq})).json()
    }
    assert codes["spoilers"]["name"] == "Plot spoilers" and "piracy" not in codes
    await refused(service, "GET", "/violations/piracy", 404, "violation_not_found")
    await refused(
        service,
        "POST",
        "/violations/",
        422,
        "validation_error",
        json={"code": "bad code", "name": "x"},
    )


@pytest.mark.shared_stack
@pytest.mark.parametrize("path", ["/files/nope", "/files/bad..id/download"])
async def test_unknown_files_are_not_found(service: Service, path: str) -> None:
    await refused(service, "GET", path, 404, "file_not_found")
