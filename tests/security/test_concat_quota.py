"""Finding 6, tus concatenation and storage: a final upload was composed before it was checked,
so 1000 copies of one 50 KiB part wrote their joined 50 MB blob and only then answered 413,
leaving the blob behind; and nothing bounded how much one user could make the service store.

Every attack goes over tus to the served system (real HTTP, a real nats-server, SQLite), and the
blob store's folder itself is looked at: a refusal must leave every file in it as it was.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from adapters.envelope import Metadata
from adapters.nats_server import EmbeddedNatsServer
from api.settings import Settings
from domain.storage import STORAGE, ReserveStorage, account_id
from domain.uploads import UPLOAD, ConcatenateUploads, Part, UploadStatus
from handlers import storage
from handlers.commands import CommandContext
from tests.conftest import Service, start_service
from tests.small_disk import tmpfs

ServiceFactory = Callable[..., Awaitable[Service]]
KIB = 1024
MAX_SIZE = 200 * KIB
QUOTA = 400 * KIB
TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {**TUS, "Content-Type": "application/offset+octet-stream"}


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    """One service for the module's attacks (each attacker is a user of its own), on a
    nats-server of its own: its stream lives across tests, so it must not share ``ev.>`` with
    the per-test streams of the session's server."""
    server = EmbeddedNatsServer(store_dir=tmp_path_factory.mktemp("concat-nats"))
    await server.start()
    settings = Settings(
        nats_url=server.url,
        data_dir=tmp_path_factory.mktemp("concat"),
        stream="CONCAT",
        rate_limit_per_minute=100_000,
        upload_max_size=MAX_SIZE,
        user_storage_quota_bytes=QUOTA,
    )
    service = await start_service(settings)
    try:
        yield service
    finally:
        await service.stop()
        await server.stop()


def blob_files(service: Service) -> dict[str, int]:
    """Every file in the blob store's folder (blobs, staged objects, temporary files), by size."""
    root = service.runtime.blobs.root
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


async def recorded(service: Service) -> int:
    """Upload and storage-account events so far (the files slice reacts to uploads, too)."""
    store = service.runtime.store
    return len(await store.read_subject("ev.upload.>")) + len(
        await store.read_subject("ev.storage.>")
    )


async def create(client: httpx.AsyncClient, length: int, **headers: str) -> httpx.Response:
    return await client.post("/uploads/", headers={**TUS, "Upload-Length": str(length), **headers})


async def partial(client: httpx.AsyncClient, data: bytes) -> str:
    """A completed partial upload; its path, as an ``Upload-Concat`` list names it."""
    made = await create(client, len(data), **{"Upload-Concat": "partial"})
    assert made.status_code == 201, made.text
    location = made.headers["Location"]
    sent = await client.patch(location, content=data, headers={**CHUNK, "Upload-Offset": "0"})
    assert sent.status_code == 204, sent.text
    return urlparse(location).path


async def final(client: httpx.AsyncClient, parts: list[str]) -> httpx.Response:
    return await client.post(
        "/uploads/", headers={**TUS, "Upload-Concat": "final;" + " ".join(parts)}
    )


async def refused(
    service: Service, answer: Awaitable[httpx.Response], status: int, code: str
) -> dict[str, object]:
    """The attack is answered ``status``/``code`` and nothing is recorded or written."""
    files, events = blob_files(service), await recorded(service)
    response = await answer
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["status"], error["code"]) == (status, code), error
    assert blob_files(service) == files, "a refused request wrote to the blob store"
    assert await recorded(service) == events, "a refused request recorded events"
    return dict(error)


async def stored(service: Service, client: httpx.AsyncClient, location: str) -> bytes:
    seq = await service.runtime.store.last_seq()
    row = (await client.get(location, params={"wait_for_seq": seq})).json()
    assert row["status"] == "completed", row
    return service.runtime.blobs.path(row["xxh3"]).read_bytes()


# ---------------------------------------------------------------- the part list


async def test_one_part_repeated_is_refused_before_a_byte_is_written(served: Service) -> None:
    mallory = await served.client_as("operator", "mallory")
    data = os.urandom(50 * KIB)
    part = await partial(mallory, data)
    # The finding's attack: 1000 copies of the part, 50 MB joined from 50 KiB uploaded once.
    error = await refused(served, final(mallory, [part] * 1000), 400, "upload_parts_repeated")
    assert part.rsplit("/", 1)[-1] in str(error["message"])
    # A longer list is refused for its length alone, before a part is read.
    error = await refused(served, final(mallory, [part] * 1001), 400, "upload_too_many_parts")
    assert "at most 1000" in str(error["message"])

    # Named once, the part joins; tus lets it join another final upload as well.
    for _ in range(2):
        joined = await final(mallory, [part])
        assert joined.status_code == 201, joined.text
        assert await stored(served, mallory, joined.headers["Location"]) == data


async def test_a_final_past_the_maximum_size_is_refused_from_its_parts_recorded_lengths(
    served: Service,
) -> None:
    trudy = await served.client_as("operator", "trudy")
    pieces = [os.urandom(80 * KIB) for _ in range(3)]
    parts = [await partial(trudy, piece) for piece in pieces]

    error = await refused(served, final(trudy, parts), 413, "upload_too_large")
    assert f"{240 * KIB} bytes exceed the maximum of {MAX_SIZE}" in str(error["message"])

    joined = await final(trudy, parts[:2])
    assert joined.status_code == 201, joined.text
    assert await stored(served, trudy, joined.headers["Location"]) == pieces[0] + pieces[1]


async def test_a_join_cut_off_by_a_crash_is_finished_by_head(served: Service) -> None:
    oscar = await served.client_as("operator", "oscar")
    pieces = [os.urandom(20 * KIB) for _ in range(2)]
    parts = [await partial(oscar, piece) for piece in pieces]
    # A service that recorded the final upload and died before a byte of the join was written.
    final_id = "crashedjoin01"
    recorded_final = ConcatenateUploads(
        upload_id=final_id,
        owner="oscar",
        parts=[
            Part(
                upload_id=p.rsplit("/", 1)[-1],
                partial=True,
                status=UploadStatus.COMPLETED,
                length=20 * KIB,
            )
            for p in parts
        ],
        expires_at=None,
        max_size=MAX_SIZE,
    )
    died = CommandContext(Metadata(actor="user:oscar"))
    await served.runtime.commands.execute(UPLOAD, final_id, recorded_final, died)
    location = f"{served.base_url}/api/v1/uploads/{final_id}"

    answer = await oscar.head(location, headers=TUS)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Upload-Offset"] == str(40 * KIB)
    assert await stored(served, oscar, location) == pieces[0] + pieces[1]
    assert served.runtime.blobs.staged_size(final_id) == 0


# ---------------------------------------------------------------- the storage quota


async def test_a_user_over_the_quota_gets_413_while_another_user_still_uploads(
    served: Service,
) -> None:
    ann = await served.client_as("operator", "ann")
    bob = await served.client_as("operator", "bob")
    first = await create(ann, 200 * KIB)
    assert first.status_code == 201, first.text
    assert (await create(ann, 150 * KIB)).status_code == 201

    # Declared lengths of unfinished uploads count: 350 KiB are held, 100 more do not fit.
    error = await refused(served, create(ann, 100 * KIB), 413, "storage_quota_exceeded")
    message = str(error["message"])
    assert f"quota is {QUOTA} bytes" in message and f"{350 * KIB} are in use" in message
    # Nor may a deferred length carry the bytes past it.
    deferred = await ann.post("/uploads/", headers={**TUS, "Upload-Defer-Length": "1"})
    assert deferred.status_code == 201, deferred.text
    await refused(
        served,
        ann.patch(
            deferred.headers["Location"],
            content=os.urandom(100 * KIB),
            headers={**CHUNK, "Upload-Offset": "0"},
        ),
        413,
        "storage_quota_exceeded",
    )

    # Another user's uploads are their own account's.
    other = await create(bob, 100 * KIB)
    assert other.status_code == 201, other.text

    # A terminated unfinished upload gives its bytes back.
    gone = await ann.delete(first.headers["Location"], headers=TUS)
    assert gone.status_code == 204, gone.text
    assert (await create(ann, 100 * KIB)).status_code == 201


async def test_a_final_upload_is_held_to_the_quota_before_it_is_joined(served: Service) -> None:
    carol = await served.client_as("operator", "carol")
    parts = [await partial(carol, os.urandom(90 * KIB)) for _ in range(2)]  # 180 KiB stored
    assert (await create(carol, 100 * KIB)).status_code == 201  # 100 KiB in flight

    # The join copies the parts' bytes: 180 KiB more would be 460 of a 400 KiB quota.
    error = await refused(served, final(carol, parts), 413, "storage_quota_exceeded")
    assert f"{280 * KIB} are in use ({180 * KIB} stored" in str(error["message"])


async def test_a_reservation_left_by_a_dead_request_is_reclaimed_when_it_blocks(
    served: Service,
) -> None:
    dave = await served.client_as("operator", "dave")
    died = CommandContext(Metadata(actor="user:dave"))
    now = datetime.now(UTC)
    for upload_id, at in (("deadbeef01", now - timedelta(minutes=2)), ("deadbeef02", now)):
        # A request that reserved bytes and died before its upload was recorded.
        leak = ReserveStorage(
            owner="dave", upload_id=upload_id, length=200 * KIB, quota=QUOTA, at=at
        )
        await served.runtime.commands.execute(STORAGE, account_id("dave"), leak, died)

    # 400 KiB are held by leaks: the old one is reclaimed, the one just made is not.
    assert (await create(dave, 150 * KIB)).status_code == 201
    await refused(served, create(dave, 100 * KIB), 413, "storage_quota_exceeded")
    held = (await storage.account(served.runtime.commands, "dave")).in_flight
    assert "deadbeef01" not in held and "deadbeef02" in held and len(held) == 2


# ---------------------------------------------------------------- a really full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs as the service's blob folder (set up before the service, so it is
    unmounted after the service stops)."""
    with tmpfs(tmp_path / "blobs", 1024 * KIB) as mountpoint:
        yield mountpoint


async def test_a_full_disk_answers_507_and_a_join_that_does_not_fit_leaves_nothing(
    small_disk: Path, service_factory: ServiceFactory
) -> None:
    service = await service_factory()
    assert service.runtime.blobs.root == small_disk
    eve = await service.client_as("operator", "eve")
    parts = [await partial(eve, os.urandom(384 * KIB)) for _ in range(2)]
    files = blob_files(service)

    # The parts' 768 KiB fit on the 1 MiB disk; joined, another 768 KiB do not.
    joined = await final(eve, parts)
    assert joined.status_code == 507, joined.text
    assert joined.json()["error"]["code"] == "insufficient_storage"
    assert blob_files(service) == files, "the join that failed left bytes behind"
    finals = [
        e.payload
        for e in await service.runtime.store.read_subject("ev.upload.*.UploadCreated")
        if e.payload["parts"]
    ]
    [given_up] = finals
    events = await service.runtime.store.read_subject(f"ev.upload.{given_up['upload_id']}.>")
    assert [e.type for e in events] == ["UploadCreated", "UploadTerminated"]
    assert (await storage.account(service.runtime.commands, "eve")).in_flight == {}

    # An ordinary chunk that does not fit is told the same.
    made = await create(eve, 512 * KIB)
    sent = await eve.patch(
        made.headers["Location"],
        content=os.urandom(512 * KIB),
        headers={**CHUNK, "Upload-Offset": "0"},
    )
    assert sent.status_code == 507, sent.text
    assert sent.json()["error"]["code"] == "insufficient_storage"
