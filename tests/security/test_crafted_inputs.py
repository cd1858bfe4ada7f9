"""Finding 14: crafted inputs that answered 500. Each is a client's mistake: a 4xx with a
stable code, and nothing recorded."""

from __future__ import annotations

import pytest

from tests.conftest import Service

TUS = {"Tus-Resumable": "1.0.0"}


@pytest.mark.parametrize("length", ["²", "٣", "1e3", "-1", "99999999999999999999999999"])
async def test_an_upload_length_that_is_not_ascii_digits_is_refused(
    service: Service, length: str
) -> None:
    headers = {**TUS, "Upload-Length": length.encode()}  # raw UTF-8 bytes, as a crafted client
    answer = await service.http.post("/uploads/", headers=headers)
    assert 400 <= answer.status_code < 500, answer.text


async def test_an_upload_offset_that_is_not_ascii_digits_is_refused(service: Service) -> None:
    created = await service.http.post("/uploads/", headers={**TUS, "Upload-Length": "10"})
    location = created.headers["Location"]
    answer = await service.http.patch(
        location,
        content=b"x",
        headers={
            **TUS,
            "Upload-Offset": "³".encode(),
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert 400 <= answer.status_code < 500, answer.text


async def test_json_nested_deeper_than_any_body_needs_is_refused(service: Service) -> None:
    body = "[" * 100_000 + "]" * 100_000
    answer = await service.http.post(
        "/tasks", content=body, headers={"Content-Type": "application/json"}
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"]["code"] == "json_too_deep"


async def test_oversized_deployment_metadata_is_refused_before_it_reaches_the_log(
    service: Service,
) -> None:
    before = await service.runtime.store.last_seq()
    answer = await service.http.post(
        "/deployments",
        json={
            "environment": "staging",
            "mode": "uv",
            "config": {"package": "requests"},
            "metadata": {f"k{i}": "v" * 1000 for i in range(1100)},
        },
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["fields"][0]["field"] == "metadata"
    assert await service.runtime.store.last_seq() == before


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/audit/events", {"since": "2026-01-01T00:00:00"}),
        ("/audit/events", {"until": "2026-01-01T00:00:00"}),
        ("/audit/task/t1", {"as_of_time": "2026-01-01T00:00:00"}),
        ("/audit/events", {"from_seq": str(2**70)}),
        ("/events/stream", {"from_seq": str(2**70)}),
    ],
)
async def test_times_without_a_zone_and_huge_sequences_are_refused(
    service: Service, path: str, params: dict[str, str]
) -> None:
    answer = await service.http.get(path, params=params)
    assert answer.status_code in (400, 422), answer.text


async def test_a_last_event_id_that_is_not_a_sequence_is_refused(service: Service) -> None:
    for value in ("1e23", "²", "-5", str(2**70)):
        answer = await service.http.get("/events/stream", headers={"Last-Event-ID": value.encode()})
        assert answer.status_code in (400, 422), (value, answer.text)
