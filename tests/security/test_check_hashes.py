"""Finding 13: ``POST /files/check-hashes`` must not tell a user what another user stored."""

from __future__ import annotations

import uuid

from tests.conftest import Service
from tests.test_files import has_status, upload, wait_file


async def test_another_users_content_is_answered_as_missing(service: Service) -> None:
    data = uuid.uuid4().bytes * 64
    file_id = await upload(service, data)  # alice's file (the story's uploads are hers)
    stored = await wait_file(service, file_id, has_status("ready"))
    digest = stored["hash"]
    seq = {"wait_for_seq": await service.runtime.store.last_seq()}
    alice = await service.client_as("operator", "alice")
    mallory = await service.client_as("operator", "mallory")

    seen_by_alice = await alice.post("/files/check-hashes", json={"hashes": [digest]}, params=seq)
    seen_by_mallory = await mallory.post(
        "/files/check-hashes", json={"hashes": [digest]}, params=seq
    )

    assert [c["hash"] for c in seen_by_alice.json()["existing"]] == [digest]
    assert seen_by_mallory.status_code == 200
    assert seen_by_mallory.json() == {"existing": [], "missing": [digest]}
    assert stored["asset_id"] not in seen_by_mallory.text
