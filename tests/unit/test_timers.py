"""Timers and process managers: the projection picks candidates, the aggregate has the last word.

Each story gives the aggregate's history, brings the projections up to date as the projectors
would, runs one check at a chosen instant and reads what it recorded.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

from domain.base import Event
from domain.deployment_slots import (
    DEPLOYMENT_SLOTS,
    SLOTS_ID,
    DeploymentSlotReserved,
    ReleaseSlot,
)
from domain.deployments import DEPLOYMENT, DeploymentAccepted
from domain.files import (
    FILE,
    FileProcessingStarted,
    FileRegistered,
    FileStored,
    ReferKeyConsumed,
    ReferKeyIssued,
)
from domain.nodes import NODE, NodeHeartbeat, NodeJoined
from domain.tasks import TASK, TaskAssigned, TaskTimedOut
from handlers.deployments import ENDED, expire_deployments
from handlers.process_managers import expire_leases, mark_silent_nodes, requeue_tasks_of
from handlers.refer_keys import advance_refer_keys
from tests import task_events
from tests.unit.conftest import Stage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


submitted = functools.partial(task_events.submitted, max_attempts=2)


def assigned(task_id: str, node: str = "n1", attempt: int = 1) -> TaskAssigned:
    return TaskAssigned(task_id=task_id, node_id=node, attempt=attempt, lease_deadline=seconds(90))


async def test_an_expired_lease_times_the_task_out_and_requeues_it(stage: Stage) -> None:
    await stage.given(TASK, "late", submitted("late"), assigned("late"), at=T0)
    await stage.given(TASK, "last", submitted("last", max_attempts=1), assigned("last"), at=T0)

    assert await expire_leases(stage.commands, stage.sessions, seconds(89)) == 0
    assert await expire_leases(stage.commands, stage.sessions, seconds(91)) == 2

    [late, last] = [(await stage.store.history("task", t))[-1] for t in ("late", "last")]
    assert (late.type, late.payload["requeued"], late.actor) == (
        "TaskTimedOut",
        True,
        "system:timer",
    )
    assert (last.type, last.payload["requeued"]) == ("TaskTimedOut", False)
    assert late.occurred_at == seconds(91)


async def test_a_lease_renewed_since_the_projection_looked_is_left_alone(stage: Stage) -> None:
    await stage.given(TASK, "t1", submitted("t1"), assigned("t1"), at=T0)
    # Another instance timed it out and it was leased again, unseen by this projection yet.
    await stage.store.append(
        "task",
        "t1",
        [
            TaskTimedOut(task_id="t1", node_id="n1", attempt=1, requeued=True),
            assigned("t1", "n2", attempt=2).model_copy(update={"lease_deadline": seconds(500)}),
        ],
        await stage.store.last_seq(),
    )

    assert await expire_leases(stage.commands, stage.sessions, seconds(91)) == 0
    assert (await stage.store.history("task", "t1"))[-1].type == "TaskAssigned"


def heartbeat(node: str, at: datetime) -> NodeHeartbeat:
    return NodeHeartbeat(node_id=node, at=at, resources=None, current_load=None)


async def test_a_node_silent_for_too_long_goes_offline(stage: Stage) -> None:
    await stage.given(NODE, "quiet", NodeJoined(node_id="quiet"), heartbeat("quiet", T0), at=T0)
    await stage.given(
        NODE, "chatty", NodeJoined(node_id="chatty"), heartbeat("chatty", seconds(25))
    )

    offline = await mark_silent_nodes(stage.commands, stage.sessions, seconds(31), silence_s=30)

    assert offline == 1
    assert await stage.recorded(NODE, "quiet") == ["NodeJoined", "NodeHeartbeat", "NodeWentOffline"]
    assert await stage.recorded(NODE, "chatty") == ["NodeJoined", "NodeHeartbeat"]


async def test_the_tasks_of_a_node_gone_offline_are_requeued_or_failed(stage: Stage) -> None:
    await stage.given(TASK, "again", submitted("again"), assigned("again"))
    await stage.given(TASK, "spent", submitted("spent", max_attempts=1), assigned("spent"))
    await stage.given(TASK, "other", submitted("other"), assigned("other", node="n2"))

    held = await requeue_tasks_of(stage.commands, stage.sessions, "n1")

    assert held == 2
    again, spent = [(await stage.store.history("task", t))[-1] for t in ("again", "spent")]
    assert (again.type, again.payload["reason"]) == ("TaskRequeued", "node n1 offline")
    assert (spent.type, spent.actor) == ("TaskFailed", "system:node-watch")
    assert spent.payload["error"] == "node n1 offline; no attempts left (1/1)"
    assert await stage.recorded(TASK, "other") == ["TaskSubmitted", "TaskAssigned"]


def accepted(deployment_id: str, timeout: int) -> DeploymentAccepted:
    return DeploymentAccepted(
        deployment_id=deployment_id,
        mode="uv",
        environment="dev",
        environment_variables=[],
        config={},
        timeout=timeout,
        force_rebuild=False,
        skip_health_check=False,
        callback_url=None,
        metadata={},
        owner="ann",
        accepted_at=T0,
    )


async def test_a_deployment_past_its_timeout_is_timed_out(stage: Stage) -> None:
    await stage.given(DEPLOYMENT, "uv_slow", accepted("uv_slow", timeout=60), at=T0)
    await stage.given(DEPLOYMENT, "uv_long", accepted("uv_long", timeout=600), at=T0)

    timed_out = await expire_deployments(stage.commands, stage.sessions, seconds(61))

    assert timed_out == 1
    assert await stage.recorded(DEPLOYMENT, "uv_slow") == [
        "DeploymentAccepted",
        "DeploymentTimedOut",
    ]
    assert await stage.recorded(DEPLOYMENT, "uv_long") == ["DeploymentAccepted"]


async def test_a_deployment_that_ended_in_any_way_gives_its_slot_back(stage: Stage) -> None:
    ended = [f"uv_{kind.lower()}" for kind in ENDED]
    await stage.given(
        DEPLOYMENT_SLOTS,
        SLOTS_ID,
        *(
            DeploymentSlotReserved(deployment_id=d, limit=len(ended), owner="ann", reserved_at=T0)
            for d in ended
        ),
    )

    for deployment_id in ended:  # what the slot releaser sends for each end event
        await stage.commands.execute(
            DEPLOYMENT_SLOTS, SLOTS_ID, ReleaseSlot(deployment_id=deployment_id)
        )
    again = await stage.commands.execute(
        DEPLOYMENT_SLOTS, SLOTS_ID, ReleaseSlot(deployment_id=ended[0])
    )

    slots, _ = await stage.store.load(DEPLOYMENT_SLOTS, SLOTS_ID)
    assert slots.active == frozenset()
    assert again.events == ()  # a redelivered end frees nothing twice
    assert (await stage.recorded(DEPLOYMENT_SLOTS, SLOTS_ID)).count("DeploymentSlotReleased") == 4


def ready_file(file_id: str) -> list[Event]:
    return [
        FileRegistered(
            file_id=file_id,
            owner="ann",
            filename="a.bin",
            file_type=None,
            length=3,
            metadata={},
            registered_at=T0,
        ),
        FileProcessingStarted(file_id=file_id, length=3, xxh3="0" * 32),
        FileStored(file_id=file_id, asset_id="0" * 32, storage_path="00/00"),
        ReferKeyIssued(
            file_id=file_id,
            refer_key=f"key-{file_id}",
            generation=1,
            issued_at=T0,
            expires_at=seconds(90),
            chain_ends_at=seconds(600),
        ),
    ]


async def test_a_live_refer_key_rotates_when_due_and_expires_with_its_chain(stage: Stage) -> None:
    await stage.given(FILE, "f1", *ready_file("f1"), at=T0)

    assert await advance_refer_keys(stage.commands, stage.sessions, seconds(89), 90) == 0
    assert await advance_refer_keys(stage.commands, stage.sessions, seconds(91), 90) == 1
    await stage.project()
    assert await advance_refer_keys(stage.commands, stage.sessions, seconds(600), 90) == 1

    history = await stage.store.history("file", "f1")
    rotated, expired = history[-2:]
    assert (rotated.type, rotated.payload["generation"]) == ("ReferKeyRotated", 2)
    assert rotated.payload["previous_key"] == "key-f1"
    assert (expired.type, expired.payload["refer_key"]) == (
        "ReferKeyExpired",
        rotated.payload["refer_key"],
    )
    assert {e.actor for e in history[-2:]} == {"system:refer-keys"}


async def test_a_consumed_refer_key_no_longer_rotates_but_still_expires(stage: Stage) -> None:
    consumed = ReferKeyConsumed(
        file_id="f1", refer_key="key-f1", user="bob", expires_at=seconds(600)
    )
    await stage.given(FILE, "f1", *ready_file("f1"), consumed, at=T0)

    assert await advance_refer_keys(stage.commands, stage.sessions, seconds(91), 90) == 0
    assert await advance_refer_keys(stage.commands, stage.sessions, seconds(600), 90) == 1

    assert (await stage.recorded(FILE, "f1"))[-2:] == ["ReferKeyConsumed", "ReferKeyExpired"]
