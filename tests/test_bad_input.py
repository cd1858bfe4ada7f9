"""Bad input gets one clear JSON error envelope and appends nothing to the event stream."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Service


async def stream_length(service: Service) -> int:
    return await service.runtime.store.last_seq()


async def refused(
    service: Service, method: str, path: str, status: int, code: str, **kwargs: Any
) -> dict[str, Any]:
    before = await stream_length(service)
    answer = await service.http.request(method, path, **kwargs)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"}
    assert body["error"]["status"] == status
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in answer.text
    assert await stream_length(service) == before, "a refused request appended events"
    return dict(body["error"])


@pytest.mark.shared_stack
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"code": ""}, "code"),
        ({"code": "   "}, "code"),
        ({"code": "x" * 10_001}, "code"),
        ({"code": "print(1)", "timeout": 0}, "timeout"),
        ({"code": "print(1)", "timeout": -5}, "timeout"),
        ({"code": "print(1)", "timeout": 86_401}, "timeout"),
        ({"code": "print(1)", "resources": {"cpu": 0}}, "resources"),
        ({"code": "print(1)", "priority": 11}, "priority"),
        ({"timeout": 5}, "code"),
        ({"code": "print(1)", "unexpected": True}, "unexpected"),
    ],
)
async def test_invalid_task_submissions_are_refused_with_field_errors(
    service: Service, body: dict[str, Any], field: str
) -> None:
    error = await refused(service, "POST", "/tasks", 422, "validation_error", json=body)
    assert any(field in f["field"] for f in error["fields"]), error


@pytest.mark.shared_stack
async def test_code_limit_message_names_the_limit(service: Service) -> None:
    error = await refused(
        service, "POST", "/tasks", 422, "validation_error", json={"code": "x" * 10_001}
    )
    assert "10000" in error["fields"][0]["message"]


@pytest.mark.shared_stack
async def test_malformed_json_is_a_400(service: Service) -> None:
    await refused(
        service,
        "POST",
        "/tasks",
        400,
        "malformed_json",
        content=b'{"code": "print(1)"',
        headers={"Content-Type": "application/json"},
    )


@pytest.mark.shared_stack
async def test_unknown_task_is_404_for_reads_and_writes(service: Service) -> None:
    await refused(service, "GET", "/tasks/no-such-task", 404, "task_not_found")
    await refused(service, "POST", "/tasks/no-such-task/cancel", 404, "task_not_found")
    await refused(
        service,
        "POST",
        "/tasks/no-such-task/result",
        404,
        "task_not_found",
        json={"node_id": "n1", "result": "x"},
    )


@pytest.mark.shared_stack
async def test_a_bad_task_id_in_the_path_is_a_field_error(service: Service) -> None:
    await refused(service, "POST", "/tasks/bad.id/cancel", 422, "validation_error")


async def test_result_from_a_node_that_does_not_hold_the_task(service: Service) -> None:
    submitted = (await service.http.post("/tasks", json={"code": "print(1)"})).json()
    await service.http.get("/tasks", params={"wait_for_seq": submitted["seq"]})
    assert (await service.http.post("/nodes/n1/lease")).status_code == 200
    await refused(
        service,
        "POST",
        f"/tasks/{submitted['task_id']}/result",
        409,
        "task_not_held",
        json={"node_id": "n2", "result": "stolen"},
    )


async def test_result_after_the_lease_expired_is_gone(service_factory: Any) -> None:
    service = await service_factory(lease_grace_s=0.0, timers=False)
    submitted = (await service.http.post("/tasks", json={"code": "x", "timeout": 1})).json()
    await service.http.get("/tasks", params={"wait_for_seq": submitted["seq"]})
    assert (await service.http.post("/nodes/n1/lease")).status_code == 200
    import asyncio

    await asyncio.sleep(1.2)
    await refused(
        service,
        "POST",
        f"/tasks/{submitted['task_id']}/result",
        410,
        "lease_expired",
        json={"node_id": "n1", "result": "late"},
    )


@pytest.mark.shared_stack
async def test_bad_query_parameters_are_field_errors(service: Service) -> None:
    error = await refused(
        service, "GET", "/tasks", 422, "validation_error", params={"page_size": 1000}
    )
    assert error["fields"]


@pytest.mark.shared_stack
async def test_unknown_route_is_an_enveloped_404(service: Service) -> None:
    await refused(service, "GET", "/nope", 404, "not_found")


@pytest.mark.shared_stack
async def test_waiting_for_a_sequence_never_recorded_is_refused_at_once(service: Service) -> None:
    error = await refused(
        service, "GET", "/tasks", 422, "sequence_not_recorded", params={"wait_for_seq": 10**9}
    )
    assert "beyond the last recorded sequence" in error["message"]
