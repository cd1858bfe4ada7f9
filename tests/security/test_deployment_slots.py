"""Finding 9, deployment slot leak: a crash between a start's slot reservation and its
deployment's acceptance left the slot held forever, and three such crashes blocked deployments
for good; nor could anything stop one user from holding every slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from adapters.envelope import Metadata
from domain.deployment_slots import DEPLOYMENT_SLOTS, SLOTS_ID, ReserveSlot
from handlers.commands import CommandContext
from tests.conftest import Service

ServiceFactory = Callable[..., Awaitable[Service]]


async def test_reservations_left_by_crashed_starts_are_reclaimed_after_the_bound(
    service_factory: ServiceFactory,
) -> None:
    service = await service_factory(deployment_reservation_s=1.0)
    crashed = CommandContext(Metadata(actor="user:mallory"))
    for n in range(3):  # each start died after reserving, before StartDeployment
        reserve = ReserveSlot(
            deployment_id=f"uv_20260101_00000{n}_deadbeef",
            limit=3,
            owner="mallory",
            at=datetime.now(UTC),
        )
        await service.runtime.commands.execute(DEPLOYMENT_SLOTS, SLOTS_ID, reserve, crashed)
    blocked = await service.http.post("/deployments", json={"mode": "uv"})
    assert blocked.status_code == 409, blocked.text
    assert blocked.json()["error"]["code"] == "deployment_limit_reached"

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        retry = await service.http.post("/deployments", json={"mode": "uv"})
        if retry.status_code == 202:
            break
        await asyncio.sleep(0.2)
    assert retry.status_code == 202, retry.text
    subject = "ev.deployslots.*.DeploymentSlotReclaimed"
    while len(reclaimed := await service.runtime.store.read_subject(subject)) < 3:
        assert time.monotonic() < deadline, [e.payload for e in reclaimed]
        await asyncio.sleep(0.2)
    assert sorted(e.payload["deployment_id"] for e in reclaimed) == [
        f"uv_20260101_00000{n}_deadbeef" for n in range(3)
    ]
    assert {e.actor for e in reclaimed} == {"system:deployment-slots"}
    for _ in range(2):  # every leaked slot is free again: the limit is 3 real deployments
        more = await service.http.post("/deployments", json={"mode": "uv"})
        assert more.status_code == 202, more.text


async def test_a_users_own_deployments_are_held_to_the_per_user_limit(
    service_factory: ServiceFactory,
) -> None:
    service = await service_factory(max_deployments_per_user=1)
    ann = await service.client_as("operator", "ann")
    bob = await service.client_as("operator", "bob")
    first = await ann.post("/deployments", json={"mode": "uv"})
    assert first.status_code == 202, first.text
    second = await ann.post("/deployments", json={"mode": "uv"})
    assert second.status_code == 409, second.text
    error = second.json()["error"]
    assert error["code"] == "deployment_user_limit_reached"
    assert "At most 1 of one user's deployments" in error["message"]
    other = await bob.post("/deployments", json={"mode": "uv"})
    assert other.status_code == 202, other.text

    cancelled = await ann.post(f"/deployments/{first.json()['deployment_id']}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    deadline = time.monotonic() + 15  # the releaser gives the slot back when it ends
    while time.monotonic() < deadline:
        again = await ann.post("/deployments", json={"mode": "uv"})
        if again.status_code == 202:
            break
        await asyncio.sleep(0.1)
    assert again.status_code == 202, again.text
