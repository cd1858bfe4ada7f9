"""Render jobs through the real HTTP API, NATS and SQL: a render farm user's stories."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.nats_auth import NatsRole
from tests.conftest import Service

JETFLOW = str(Path(sys.executable).parent / "jetflow")
HASH = "ab" * 16


async def create(service: Service, **body: Any) -> dict[str, Any]:
    payload = {
        "unionid": "user123",
        "oss_file_path": "projects/user123/wolf.ma",
        "render_engine": "maya",
        "total_frames": 4,
    } | body
    answer = await service.http.post("/render-jobs", json=payload)
    assert answer.status_code == 201, answer.text
    assert answer.json()["code"] == 201
    return dict(answer.json()["data"])


async def job(service: Service, job_id: str, seq: int | None = None) -> dict[str, Any]:
    params = {"wait_for_seq": seq} if seq else {}
    answer = await service.http.get(f"/render-jobs/{job_id}", params=params)
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["data"])


async def lease(service: Service, node: str = "node-1") -> dict[str, Any] | None:
    answer = await service.http.post(f"/render-nodes/{node}/lease")
    if answer.status_code == 204:
        return None
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["data"])


async def finish(service: Service, leased: dict[str, Any], node: str = "node-1") -> dict[str, Any]:
    answer = await service.http.post(
        f"/render-jobs/{leased['task_id']}/frames/{leased['frame_number']}/finish",
        json={
            "node_id": node,
            "output_path": f"out/{leased['frame_number']}.exr",
            "output_size": 5_242_880,
            "output_hash": HASH,
            "render_time": 180,
        },
    )
    assert answer.status_code == 202, answer.text
    return dict(answer.json()["data"])


async def test_test_frames_gate_the_job_until_resumed(service: Service) -> None:
    created = await create(
        service, test_frames="2", stop_after_test=True, ram=64, gpu_count=2, priority=7
    )
    assert created["hardware_config"]["id"] == "high_performance"
    job_id = created["id"]
    await job(service, job_id, created["seq"])

    first = await lease(service)
    assert first is not None and first["frame_number"] == 2
    done = await finish(service, first)
    tested = await job(service, job_id, done["seq"])
    assert tested["status"] == "test_completed"
    assert tested["test_frame_status"] == "completed"
    assert await lease(service) is None

    resumed = await service.http.post(f"/render-jobs/{job_id}/resume")
    assert resumed.status_code == 202
    await job(service, job_id, resumed.json()["data"]["seq"])
    frames = []
    while (leased := await lease(service)) is not None:
        frames.append(leased["frame_number"])
        last = await finish(service, leased)
    assert frames == [1, 3, 4]
    final = await job(service, job_id, last["seq"])
    assert final["status"] == "completed"
    assert final["progress"] == 100.0
    assert final["completed_frames"] == 4
    assert final["actual_cost"] == pytest.approx(2.5 * 4 * 180 / 3600)
    assert final["average_frame_time"] == 180

    frame = await service.http.get(f"/render-jobs/{job_id}/frames/2")
    body = frame.json()["data"]
    assert body["status"] == "completed"
    assert body["is_test_frame"] is True
    assert body["output_hash"] == HASH
    assert body["node_id"] == "node-1"


async def test_pause_resume_cancel_and_illegal_transitions(service: Service) -> None:
    created = await create(service)
    job_id = created["id"]
    await job(service, job_id, created["seq"])
    leased = await lease(service)
    assert leased is not None

    paused = await service.http.post(f"/render-jobs/{job_id}/pause")
    assert paused.status_code == 202
    assert (await job(service, job_id, paused.json()["data"]["seq"]))["status"] == "paused"
    assert await lease(service) is None

    again = await service.http.post(f"/render-jobs/{job_id}/pause")
    assert again.status_code == 409
    body = again.json()
    assert body["code"] == 3000
    assert body["error"]["code"] == "render_job_not_pausable"

    await service.http.post(f"/render-jobs/{job_id}/resume")
    cancelled = await service.http.post(f"/render-jobs/{job_id}/cancel", json={"reason": "typo"})
    assert cancelled.status_code == 202
    view = await job(service, job_id, cancelled.json()["data"]["seq"])
    assert view["status"] == "cancelled"
    assert view["failure_reason"] == "typo"

    late = await service.http.post(
        f"/render-jobs/{job_id}/frames/{leased['frame_number']}/finish",
        json={
            "node_id": "node-1",
            "output_path": "x",
            "output_size": 1,
            "output_hash": HASH,
            "render_time": 1,
        },
    )
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "render_job_cancelled"
    for verb in ("pause", "resume", "cancel"):
        refused = await service.http.post(f"/render-jobs/{job_id}/{verb}")
        assert refused.status_code == 409, verb
        assert refused.json()["code"] == 3000


async def test_failed_frames_retry_automatically_then_manually(service: Service) -> None:
    created = await create(service, total_frames=2, max_frame_retries=1)
    job_id = created["id"]
    await job(service, job_id, created["seq"])

    async def fail(leased: dict[str, Any]) -> dict[str, Any]:
        answer = await service.http.post(
            f"/render-jobs/{job_id}/frames/{leased['frame_number']}/fail",
            json={"node_id": "node-1", "error": "out of memory"},
        )
        assert answer.status_code == 202
        return dict(answer.json()["data"])

    first = await lease(service)
    assert first is not None and first["frame_number"] == 1
    await fail(first)
    retried = await lease(service)
    assert retried is not None and retried["frame_number"] == 1
    assert retried["attempt"] == 2
    gone = await fail(retried)
    frame = (
        await service.http.get(
            f"/render-jobs/{job_id}/frames/1", params={"wait_for_seq": gone["seq"]}
        )
    ).json()["data"]
    assert frame["status"] == "failed"
    assert frame["retry_count"] == 1
    assert frame["error_message"] == "out of memory"

    manual = await service.http.post(f"/render-jobs/{job_id}/frames/1/retry")
    assert manual.status_code == 202
    assert (await lease(service))["frame_number"] == 1  # type: ignore[index]
    not_failed = await service.http.post(f"/render-jobs/{job_id}/frames/2/retry")
    assert not_failed.status_code == 409
    assert not_failed.json()["error"]["code"] == "frame_not_failed"


async def test_a_frame_past_its_timeout_is_failed_by_the_timer(service: Service) -> None:
    created = await create(service, total_frames=1, frame_timeout=1, max_frame_retries=0)
    job_id = created["id"]
    await job(service, job_id, created["seq"])
    assert await lease(service) is not None
    for _ in range(60):
        view = await job(service, job_id)
        if view["status"] == "failed":
            break
        await asyncio.sleep(0.1)
    assert view["status"] == "failed"
    frame = (await service.http.get(f"/render-jobs/{job_id}/frames/1")).json()["data"]
    assert frame["error_message"] == "frame timeout"


async def test_listing_sorting_filtering_fields_and_batch_status(service: Service) -> None:
    ids = []
    for priority in (3, 9, 5):
        ids.append((await create(service, priority=priority))["id"])
    await service.http.post(f"/render-jobs/{ids[0]}/pause")
    last = await service.http.post(f"/render-jobs/{ids[2]}/cancel")
    seq = last.json()["data"]["seq"]

    page = (
        await service.http.get(
            "/render-jobs",
            params={
                "sort_by": "priority",
                "order": "desc",
                "page_size": 2,
                "wait_for_seq": seq,
                "fields": "id,priority",
            },
        )
    ).json()["data"]
    assert page["total"] == 3
    assert page["total_pages"] == 2
    assert page["items"] == [{"id": ids[1], "priority": 9}, {"id": ids[2], "priority": 5}]

    paused = (await service.http.get("/render-jobs", params={"status": "paused"})).json()["data"]
    assert [j["id"] for j in paused["items"]] == [ids[0]]

    picked = (
        await service.http.get(f"/render-jobs/{ids[1]}", params={"fields": "id,status,progress"})
    ).json()
    assert picked == {
        "code": 200,
        "message": "OK",
        "data": {"id": ids[1], "status": "queued", "progress": 0.0},
    }

    status = (await service.http.get(f"/render-jobs/{ids[1]}/status")).json()["data"]
    assert status["total_frames"] == 4
    assert "scene_file" not in status

    batch = (
        await service.http.post("/render-jobs/batch-status", json={"task_ids": [*ids, "nope"]})
    ).json()["data"]
    assert [(i["id"], i["status"]) for i in batch["items"]] == [
        (ids[0], "paused"),
        (ids[1], "queued"),
        (ids[2], "cancelled"),
    ]
    assert batch["missing"] == ["nope"]


async def seed_refusal(
    service: Service, method: str, path: str, status: int, code: int, **kw: Any
) -> dict[str, Any]:
    before = await service.runtime.store.last_seq()
    answer = await service.http.request(method, path, **kw)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["code"] == code
    assert body["message"] and "detail" in body and "errors" in body
    assert body["error"]["status"] == status
    assert await service.runtime.store.last_seq() == before
    return dict(body)


@pytest.mark.shared_stack
async def test_bad_input_gets_the_seed_codes_and_appends_nothing(service: Service) -> None:
    base = {"unionid": "u", "oss_file_path": "a.ma", "render_engine": "maya", "total_frames": 10}
    body = await seed_refusal(
        service, "POST", "/render-jobs", 400, 1002, json=base | {"test_frames": "abc"}
    )
    assert body["errors"][0]["field"] == "test_frames"
    assert body["errors"][0]["value"] == "abc"
    outside = await seed_refusal(
        service, "POST", "/render-jobs", 400, 1002, json=base | {"test_frames": "50"}
    )
    assert outside["errors"][0]["field"] == "test_frames"
    missing = {k: v for k, v in base.items() if k != "render_engine"}
    assert (await seed_refusal(service, "POST", "/render-jobs", 400, 1001, json=missing))["errors"][
        0
    ]["field"] == "render_engine"
    await seed_refusal(
        service, "POST", "/render-jobs", 400, 1002, json=base | {"render_engine": "blender"}
    )
    await seed_refusal(
        service, "POST", "/render-jobs", 400, 1002, json=base | {"total_frames": 10_001}
    )
    await seed_refusal(service, "POST", "/render-jobs", 400, 1002, json=base | {"priority": 11})
    await seed_refusal(
        service, "POST", "/render-jobs", 400, 1002, json=base | {"hardware_config_id": "nope"}
    )
    await seed_refusal(
        service,
        "POST",
        "/render-jobs",
        400,
        1000,
        content=b"{",
        headers={"Content-Type": "application/json"},
    )
    await seed_refusal(service, "GET", "/render-jobs/missing-job", 404, 2001)
    await seed_refusal(service, "POST", "/render-jobs/missing-job/pause", 404, 2001)
    await seed_refusal(service, "GET", "/render-jobs", 400, 1002, params={"sort_by": "owner"})
    created = await create(service)
    await job(service, created["id"], created["seq"])
    await seed_refusal(service, "GET", f"/render-jobs/{created['id']}/frames/99", 404, 2000)
    await seed_refusal(
        service, "GET", f"/render-jobs/{created['id']}", 400, 1002, params={"fields": "id,secret"}
    )


@pytest.mark.shared_stack
async def test_hardware_configs_and_matching(service: Service) -> None:
    listed = (await service.http.get("/hardware-configs")).json()["data"]
    assert {c["id"] for c in listed} >= {"basic", "high_performance", "ultra_high"}
    matched = (
        await service.http.post("/hardware-configs/match", json={"ram": 64, "gpu_count": 2})
    ).json()["data"]
    assert matched["recommended"]["id"] == "high_performance"
    assert [a["id"] for a in matched["alternatives"]] == ["ultra_high"]
    none = await service.http.post("/hardware-configs/match", json={"ram": 4096})
    assert none.status_code == 404
    assert none.json()["code"] == 2000


@pytest.mark.shared_stack
async def test_scene_analysis_is_cached_by_hash_and_lists_job_assets(service: Service) -> None:
    scene_hash = "6E57EFC1FB88700DFC4820E160348F07"
    analysis = {
        "scene_file_hash": scene_hash,
        "scene_file": "C:/Project/wolf.ma",
        "scene_file_size": 841968626,
        "scene_info": {
            "renderer": "arnold",
            "start_frame": 1,
            "end_frame": 100,
            "width": 2048,
            "height": 1152,
        },
        "assets": [
            {"path": "C:/textures/wood.jpg", "size": 1024000, "type": "texture", "exists": True},
            {"path": "Y:/missing.jpg", "size": None, "type": "texture", "exists": False},
        ],
        "missing": [{"node": "file1", "path": "Y:/missing.jpg", "reason": "file_not_found"}],
    }
    recorded = await service.http.post("/scene/analyse", json=analysis)
    assert recorded.status_code == 201, recorded.text
    seq = recorded.json()["data"]["seq"]
    cached = (
        await service.http.get(f"/scene/analyse/{scene_hash.lower()}", params={"wait_for_seq": seq})
    ).json()["data"]
    assert cached["scene_info"]["renderer"] == "arnold"
    assert cached["asset_summary"] == {"total_count": 2, "total_size": 1024000, "missing_count": 1}
    created = await create(service, scene_file_hash=scene_hash.lower())
    assets = (
        await service.http.get(
            f"/render-jobs/{created['id']}/assets", params={"wait_for_seq": created["seq"]}
        )
    ).json()["data"]
    assert assets["total_count"] == 2
    assert assets["missing_count"] == 1
    unknown = await service.http.get("/scene/analyse/" + "0" * 32)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == 2000


@pytest.mark.parametrize("transport", ["nats", "http"])
async def test_simulated_render_nodes_drive_a_job_to_the_end(
    service: Service, transport: str, tmp_path: Path
) -> None:
    created = await create(service, total_frames=200, test_frames="1,100", max_frame_retries=3)
    await job(service, created["id"], created["seq"])
    key = await service.key("worker", "render-farm")
    seed = tmp_path / "render-farm.nk"
    seed.write_bytes(service.runtime.nats_users.create("render-farm", NatsRole.worker))
    where = (
        ["--nats", service.runtime.nats_url, "--nats-user", "render-farm", "--nats-seed", str(seed)]
        if transport == "nats"
        else ["--api", service.base_url, "--api-key", key]
    )
    nodes = await asyncio.create_subprocess_exec(
        JETFLOW,
        "render-node",
        *where,
        "--count",
        "4",
        "--failure-rate",
        "0.05",
        "--idle-exit",
        "1.5",
        "--seed",
        "3",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(nodes.communicate(), 120)
    assert nodes.returncode == 0
    assert "frames finished" in out.decode()
    seq = await service.runtime.store.last_seq()
    final = await job(service, created["id"], seq)
    assert final["status"] in ("completed", "failed")
    assert final["completed_frames"] + final["failed_frames"] == 200
    assert final["queued_frames"] == final["rendering_frames"] == 0
    assert final["completed_frames"] >= 190
