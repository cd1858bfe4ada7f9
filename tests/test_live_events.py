"""Live subscriptions with real clients: httpx-sse and websockets against the served API."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from httpx_sse import ServerSentEvent, aconnect_sse

from adapters.live_feed import FeedFilter, FeedOverflow, LiveFeed
from domain.tasks import TaskProgressed
from tests.conftest import Service

pytestmark = pytest.mark.asyncio


async def submit(service: Service, code: str = "print(1)") -> dict[str, Any]:
    answer = await service.http.post("/tasks", json={"code": code})
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


async def read_sse(
    service: Service, count: int, headers: dict[str, str] | None = None, **params: Any
) -> list[ServerSentEvent]:
    received: list[ServerSentEvent] = []
    async with (
        httpx.AsyncClient(
            base_url=service.base_url, timeout=10, headers={"X-API-Key": service.admin_key}
        ) as client,
        aconnect_sse(
            client, "GET", "/api/v1/events/stream", params=params, headers=headers or {}
        ) as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for message in source.aiter_sse():
            received.append(message)
            if len(received) == count:
                break
    return received


async def test_sse_resumes_after_a_disconnect_with_no_gap_and_no_duplicate(
    service: Service,
) -> None:
    first = [await submit(service) for _ in range(3)]

    seen = await asyncio.wait_for(read_sse(service, 3, aggregate="task", from_seq=1), 10)
    assert [int(m.id) for m in seen] == [s["seq"] for s in first]
    assert {m.event for m in seen} == {"TaskSubmitted"}
    assert [json.loads(m.data)["aggregate_id"] for m in seen] == [s["task_id"] for s in first]

    # Disconnected; more happens meanwhile; the client comes back with Last-Event-ID.
    later = [await submit(service) for _ in range(2)]
    resumed = await asyncio.wait_for(
        read_sse(service, 2, headers={"Last-Event-ID": seen[-1].id}, aggregate="task"), 10
    )
    assert [int(m.id) for m in resumed] == [s["seq"] for s in later]


async def test_sse_filters_by_aggregate_id_and_event_type(service: Service) -> None:
    watched = await submit(service)
    other = await submit(service)
    await service.http.post(f"/tasks/{other['task_id']}/cancel", json={})
    cancel = await service.http.post(f"/tasks/{watched['task_id']}/cancel", json={})
    assert cancel.status_code == 202, cancel.text

    [only] = await asyncio.wait_for(
        read_sse(
            service,
            1,
            aggregate="task",
            aggregate_id=watched["task_id"],
            type="TaskCancelled",
            from_seq=1,
        ),
        10,
    )
    assert int(only.id) == cancel.json()["seq"]
    event = json.loads(only.data)
    assert (event["type"], event["aggregate_id"]) == ("TaskCancelled", watched["task_id"])
    assert event["actor"] == "user:admin"


@pytest.mark.shared_stack
async def test_sse_refuses_a_bad_filter_with_the_error_envelope(service: Service) -> None:
    answer = await service.http.get("/events/stream", params={"aggregate": "task.>"})
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "validation_error"


def ws_url(service: Service, **params: Any) -> str:
    params.setdefault("token", service.admin_key)
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{service.base_url.replace('http', 'ws', 1)}/api/v1/events/ws?{query}"


async def receive(ws: websockets.ClientConnection, count: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(count)]


async def test_websocket_feed_resumes_from_seq(service: Service) -> None:
    first = [await submit(service) for _ in range(2)]
    async with websockets.connect(ws_url(service, aggregate="task", from_seq=1)) as ws:
        seen = await receive(ws, 2)
        assert [m["seq"] for m in seen] == [s["seq"] for s in first]
        live = await submit(service)  # recorded while connected
        [pushed] = await receive(ws, 1)
        assert pushed["seq"] == live["seq"]

    later = await submit(service)
    async with websockets.connect(
        ws_url(service, aggregate="task", from_seq=pushed["seq"] + 1)
    ) as ws:
        [resumed] = await receive(ws, 1)
        assert resumed["seq"] == later["seq"]
        assert resumed["type"] == "TaskSubmitted"


async def test_websocket_named_feed_speaks_the_seed_events(service: Service) -> None:
    async with websockets.connect(ws_url(service, feed="named", from_seq=1)) as ws:
        beat = await service.http.post("/nodes/node-7/heartbeat", json={})
        assert beat.status_code == 202, beat.text
        task = await submit(service)
        await service.http.get("/tasks", params={"wait_for_seq": task["seq"]})
        lease = await service.http.post("/nodes/node-7/lease")
        assert lease.status_code == 200
        done = await service.http.post(
            f"/tasks/{task['task_id']}/result", json={"node_id": "node-7", "result": "ok"}
        )
        assert done.status_code == 202
        names = await receive(ws, 4)
    assert [m["event"] for m in names] == [
        "node_joined",
        "task_created",
        "task_started",
        "task_completed",
    ]
    assert names[2]["data"] == {
        "status": "assigned",
        "task_id": task["task_id"],
        "node_id": "node-7",
        "attempt": 1,
    }
    assert [m["seq"] for m in names] == sorted(m["seq"] for m in names)


async def test_a_slow_subscriber_is_cut_off_with_the_sequence_to_resume_from(
    service: Service,
) -> None:
    runtime = service.runtime
    task = await submit(service)
    async with LiveFeed(
        runtime.store,
        FeedFilter("task"),
        from_seq=task["seq"],
        max_queue=5,
    ) as feed:
        version = task["seq"]
        for percent in range(1, 21):  # the subscriber reads nothing meanwhile
            progressed = TaskProgressed(
                task_id=task["task_id"], node_id="n", percent=percent, message=""
            )
            appended = await runtime.store.append("task", task["task_id"], [progressed], version)
            version = appended.last_seq
        kept = [await feed.next(timeout=5) for _ in range(5)]
        assert [e.seq for e in kept if e is not None] == list(range(task["seq"], task["seq"] + 5))
        with pytest.raises(FeedOverflow) as cut:
            await feed.next(timeout=5)
    assert cut.value.last_seq == task["seq"] + 4
    assert f"resume from sequence {task['seq'] + 5}" in str(cut.value)

    # Resuming where it was cut delivers the rest, in order, once.
    async with LiveFeed(runtime.store, FeedFilter("task"), from_seq=task["seq"] + 5) as feed:
        rest = [await feed.next(timeout=5) for _ in range(16)]
    assert [e.seq for e in rest if e is not None] == list(range(task["seq"] + 5, task["seq"] + 21))
