"""Pipeline executions answer at both the canonical and the seed's compatibility path."""

from __future__ import annotations

import pytest

from tests.conftest import Service

STAGES = [{"name": "build", "steps": ["compile", "package"]}, {"name": "test", "steps": ["unit"]}]


@pytest.mark.parametrize("prefix", ["/cicd/executions", "/executions"])
async def test_an_execution_runs_through_either_path(service: Service, prefix: str) -> None:
    started = await service.http.post(f"{prefix}/", json={"pipeline": "web", "stages": STAGES})
    assert started.status_code == 202, started.text
    execution_id = started.json()["id"]
    for stage, step in (("build", "compile"), ("build", "package"), ("test", "unit")):
        answer = await service.http.post(
            f"{prefix}/{execution_id}/steps",
            json={"stage": stage, "step": step, "status": "success", "log": f"{step} ok"},
        )
        assert answer.status_code == 202, answer.text
    seq = answer.json()["seq"]
    for path in ("/cicd/executions", "/executions"):
        one = await service.http.get(f"{path}/{execution_id}/", params={"wait_for_seq": seq})
        assert one.status_code == 200, (path, one.text)
        body = one.json()
        assert body["status"] == "success"
        assert body["stages"][1]["steps"][0] == {
            "name": "unit",
            "status": "success",
            "log": "unit ok",
        }
        listed = (await service.http.get(f"{path}/")).json()
        assert [e["id"] for e in listed["results"]] == [execution_id]


@pytest.mark.shared_stack
async def test_a_failed_step_fails_the_execution_and_later_reports_are_refused(
    service: Service,
) -> None:
    execution_id = (
        await service.http.post("/executions/", json={"pipeline": "api", "stages": STAGES})
    ).json()["id"]
    failed = await service.http.post(
        f"/cicd/executions/{execution_id}/steps",
        json={"stage": "build", "step": "compile", "status": "failed", "log": "error: boom"},
    )
    assert failed.json()["events"] == ["ExecutionStepUpdated", "ExecutionFinished"]
    late = await service.http.post(f"/executions/{execution_id}/cancel")
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "execution_finished"


@pytest.mark.shared_stack
async def test_bad_execution_requests(service: Service) -> None:
    before = await service.runtime.store.last_seq()
    empty = await service.http.post("/executions/", json={"pipeline": "x", "stages": []})
    assert empty.status_code == 422
    unknown = await service.http.get("/cicd/executions/nope/")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "execution_not_found"
    execution_id = (
        await service.http.post("/executions/", json={"pipeline": "api", "stages": STAGES})
    ).json()["id"]
    after_start = await service.runtime.store.last_seq()
    wrong = await service.http.post(
        f"/executions/{execution_id}/steps",
        json={"stage": "deploy", "step": "x", "status": "success"},
    )
    assert wrong.status_code == 404
    assert wrong.json()["error"]["code"] == "step_not_found"
    assert await service.runtime.store.last_seq() == after_start == before + 1
