"""The webhook dispatcher against a real HTTP receiver on 127.0.0.1: what it signs and sends, how
it backs off and gives up, and the WebhookDelivered / WebhookFailed facts it leaves behind."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn

from adapters.egress_policy import EgressPolicy
from adapters.envelope import RecordedEvent
from domain.base import Aggregate, Event
from domain.nodes import NODE, NodeJoined
from domain.tasks import TASK, TaskCancelled
from handlers.webhook_courier import Courier
from handlers.webhooks import Dispatcher, Intake
from slices.catalogue import CATALOGUE
from tests.conftest import free_port
from tests.task_events import submitted
from tests.unit.conftest import Stage

SECRET = b"webhook-test-secret"


@dataclass(frozen=True)
class Call:
    at: float
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An ASGI endpoint answering each POST with the next scripted status (then 200)."""

    statuses: list[int]
    calls: list[Call] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.calls.append(Call(time.monotonic(), headers, body))
        status = self.statuses.pop(0) if self.statuses else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


Serve = Callable[..., Awaitable[tuple[Receiver, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(*statuses: int) -> tuple[Receiver, str]:
        receiver = Receiver(list(statuses))
        port = free_port()
        config = uvicorn.Config(
            receiver, host="127.0.0.1", port=port, lifespan="off", log_level="warning"
        )
        server = uvicorn.Server(config)
        servers.append((server, asyncio.create_task(server.serve())))
        while not server.started:
            await asyncio.sleep(0.01)
        return receiver, f"http://127.0.0.1:{port}/hook"

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


class Delivered:
    """The JetStream message the intake acknowledges once the event's delivery is recorded due."""

    def __init__(self, event: RecordedEvent) -> None:
        self.event = event
        self.acked = False

    async def ack(self) -> None:
        self.acked = True


class Woken:
    """The lanes as the intake sees them: which instance at which URL has something due."""

    def __init__(self) -> None:
        self.due: list[tuple[str, str]] = []

    def wake(self, url: str, webhook_id: str) -> None:
        self.due.append((url, webhook_id))


async def deliver(
    stage: Stage,
    aggregate: Aggregate[Any],
    aggregate_id: str,
    *events: Event,
    max_attempts: int = 6,
    backoff_s: float = 0.05,
) -> list[RecordedEvent]:
    """Given the events, hand them over."""
    seq = await stage.given(aggregate, aggregate_id, *events)
    recorded = (await stage.store.history(aggregate.name, aggregate_id))[-len(events) :]
    assert recorded[-1].seq == seq
    await hand_over(stage, recorded, max_attempts=max_attempts, backoff_s=backoff_s)
    return recorded


async def hand_over(
    stage: Stage, recorded: list[RecordedEvent], *, max_attempts: int, backoff_s: float
) -> None:
    """To the intake as the durable consumer would, then let the courier settle what became
    due, as the URL's lane would."""
    dispatcher = Dispatcher(
        stage.commands,
        stage.sessions,
        SECRET,
        CATALOGUE.webhook_sources,
        EgressPolicy.parse("127.0.0.0/8"),
        max_attempts=max_attempts,
        backoff_s=backoff_s,
    )
    woken = Woken()
    messages = [Delivered(e) for e in recorded]
    intake = Intake(dispatcher, woken, lambda m: m.event)  # type: ignore[arg-type]
    await intake.handle(messages)  # type: ignore[arg-type]
    assert all(m.acked for m in messages)
    courier = Courier(
        stage.commands,
        dispatcher.notification,
        asyncio.Semaphore(4),
        max_attempts=max_attempts,
        backoff_s=backoff_s,
        timeout_s=5,
    )
    async with httpx.AsyncClient(timeout=5) as http:
        for _, webhook_id in dict.fromkeys(woken.due):
            while await courier.deliver_next(webhook_id, http):
                pass


async def attempts(stage: Stage, webhook_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (e.type, e.payload)
        for e in await stage.store.history("webhook", webhook_id)
        if e.type in ("WebhookDelivered", "WebhookFailed")
    ]


async def test_each_event_is_posted_signed_and_its_delivery_recorded(
    stage: Stage, serve: Serve
) -> None:
    receiver, url = await serve()

    [event] = await deliver(stage, TASK, "t1", submitted("t1", callback_url=url))

    [call] = receiver.calls
    assert call.headers["x-jetflow-signature"] == (
        "sha256=" + hmac.new(SECRET, call.body, hashlib.sha256).hexdigest()
    )
    assert call.headers["x-jetflow-event"] == "TaskSubmitted"
    assert call.headers["x-jetflow-delivery"] == event.event_id
    assert call.headers["x-jetflow-seq"] == str(event.seq)
    assert call.headers["content-type"] == "application/json"
    body = json.loads(call.body)
    assert (body["task_id"], body["event"], body["seq"]) == ("t1", "TaskSubmitted", event.seq)
    assert "code" not in body["data"]  # a task's code stays out of its notifications
    [(kind, delivered)] = await attempts(stage, "task-t1")
    assert kind == "WebhookDelivered"
    assert (delivered["attempt"], delivered["status_code"], delivered["event_seq"]) == (
        1,
        200,
        event.seq,
    )
    due, recorded = await stage.store.history("webhook", "task-t1")
    assert due.type == "WebhookDue"  # recorded before the message was acknowledged
    assert (recorded.actor, recorded.causation_id) == ("system:webhooks", event.event_id)


async def test_a_failing_receiver_is_retried_with_exponential_backoff(
    stage: Stage, serve: Serve
) -> None:
    receiver, url = await serve(500, 503)

    await deliver(stage, TASK, "t1", submitted("t1", callback_url=url), backoff_s=0.1)

    first, second, third = receiver.calls
    assert second.at - first.at >= 0.1
    assert third.at - second.at >= 0.2
    assert first.body == second.body == third.body
    assert [
        (kind, p["attempt"], p["status_code"]) for kind, p in await attempts(stage, "task-t1")
    ] == [
        ("WebhookFailed", 1, 500),
        ("WebhookFailed", 2, 503),
        ("WebhookDelivered", 3, 200),
    ]


async def test_a_receiver_that_keeps_failing_is_given_up_and_never_sent_that_event_again(
    stage: Stage, serve: Serve
) -> None:
    receiver, url = await serve(500, 500, 500, 500)

    [event] = await deliver(stage, TASK, "t1", submitted("t1", callback_url=url), max_attempts=3)
    # The same event handed over again, as after a crash before its acknowledgement.
    await hand_over(stage, [event], max_attempts=3, backoff_s=0.01)

    assert len(receiver.calls) == 3
    recorded = await attempts(stage, "task-t1")
    assert [(kind, p["attempt"], p["will_retry"]) for kind, p in recorded] == [
        ("WebhookFailed", 1, True),
        ("WebhookFailed", 2, True),
        ("WebhookFailed", 3, False),
    ]
    assert recorded[-1][1]["error"] == "HTTP 500"


async def test_an_unreachable_receiver_is_recorded_as_failed_attempts(stage: Stage) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there

    await deliver(
        stage, TASK, "t1", submitted("t1", callback_url=url), max_attempts=2, backoff_s=0.01
    )

    recorded = await attempts(stage, "task-t1")
    assert [(kind, p["status_code"], p["will_retry"]) for kind, p in recorded] == [
        ("WebhookFailed", None, True),
        ("WebhookFailed", None, False),
    ]
    assert recorded[0][1]["error"].startswith("ConnectError")


async def test_later_events_of_the_instance_follow_in_stream_order(
    stage: Stage, serve: Serve
) -> None:
    receiver, url = await serve()

    recorded = await deliver(
        stage,
        TASK,
        "t1",
        submitted("t1", callback_url=url),
        TaskCancelled(task_id="t1", reason="enough"),
    )

    sent = [json.loads(c.body) for c in receiver.calls]
    assert [(s["event"], s["seq"]) for s in sent] == [(e.type, e.seq) for e in recorded]
    assert sent[1]["data"] == {"task_id": "t1", "reason": "enough"}


async def test_nothing_is_sent_without_a_callback_url_or_for_other_aggregates(
    stage: Stage, serve: Serve
) -> None:
    receiver, _ = await serve()

    await deliver(stage, TASK, "quiet", submitted("quiet"))
    await deliver(stage, NODE, "n1", NodeJoined(node_id="n1"))

    assert receiver.calls == []
    assert await stage.store.read_subject("ev.webhook.>") == []
