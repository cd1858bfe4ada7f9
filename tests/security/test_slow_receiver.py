"""Finding 5, one slow receiver stalls every user's webhooks: the dispatcher held one event at a
time in stream order, so a receiver that accepted the connection and never answered delayed
every other user's deliveries by its timeouts and retries (499 s in the review).

Deliveries now go per endpoint; the due events are facts in the webhook aggregates before the
dispatcher lets go of them, so a restart loses none.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.conftest import Service
from tests.security.receivers import Receiver

ServiceFactory = Callable[..., Awaitable[Service]]
# Well under one attempt at the hanging receiver before the fix (a 10 s timeout, then backoff).
BOUND_S = 8.0


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receiver, Receiver]]:
    hanging, healthy = await Receiver(hang=True).start(), await Receiver().start()
    yield hanging, healthy
    await hanging.stop()
    await healthy.stop()


async def submitted_to(receiver: Receiver, task_id: str, bound_s: float, count: int = 1) -> float:
    """When ``receiver`` read the task's TaskSubmitted notification for the ``count``-th time;
    fails after ``bound_s``."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        arrivals = [
            request.at
            for request in receiver.requests
            if (payload := json.loads(request.body)).get("task_id") == task_id
            and payload["event"] == "TaskSubmitted"
        ]
        if len(arrivals) >= count:
            return arrivals[count - 1]
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {task_id} was not delivered {count} times within {bound_s} s")


async def test_a_hanging_receiver_does_not_hold_up_another_users_webhooks(
    service: Service, receivers: tuple[Receiver, Receiver]
) -> None:
    hanging, healthy = receivers
    mallory = await service.client_as("operator", "mallory")
    alice = await service.client_as("operator", "alice")
    slow = []
    for n in range(5):  # several of mallory's events queue behind her hanging receiver
        answer = await mallory.post(
            "/tasks", json={"code": f"print({n})", "callback_url": hanging.url()}
        )
        assert answer.status_code == 202, answer.text
        slow.append(answer.json()["task_id"])
    while hanging.connections == 0:  # the dispatcher is now waiting on the hanging receiver
        await asyncio.sleep(0.02)
    sent = time.monotonic()
    task = await alice.post("/tasks", json={"code": "print(1)", "callback_url": healthy.url()})
    assert task.status_code == 202, task.text
    delivered = await submitted_to(healthy, task.json()["task_id"], BOUND_S)
    assert delivered - sent < BOUND_S
    tried = {json.loads(r.body)["task_id"] for r in hanging.requests}
    assert tried == {slow[0]}, "mallory's later events wait for her first, in order"


async def test_deliveries_due_when_the_service_stops_are_made_after_a_restart(
    service_factory: ServiceFactory, receivers: tuple[Receiver, Receiver]
) -> None:
    hanging, _ = receivers
    first = await service_factory(webhook_timeout_s=60)
    task = await first.http.post("/tasks", json={"code": "print(1)", "callback_url": hanging.url()})
    assert task.status_code == 202, task.text
    while not hanging.requests:  # due, acknowledged by the intake, in flight at the receiver
        await asyncio.sleep(0.02)
    await first.runtime.stop_background()  # the process dies mid-delivery: nothing recorded
    hanging.hang = False  # the receiver recovers
    restarted = time.monotonic()
    await service_factory()
    delivered = await submitted_to(hanging, task.json()["task_id"], 20.0, count=2)
    assert delivered - restarted < 20.0, "delivered again after the restart: at least once"
    first, again = hanging.requests[:2]
    assert first.headers["x-jetflow-delivery"] == again.headers["x-jetflow-delivery"]
    assert first.body == again.body
