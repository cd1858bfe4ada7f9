"""The command path on the in-memory store: decide on recorded events, append, retry lost races,
answer resends from the first answer, and refuse others' aggregates as if they did not exist."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.idempotency import MemoryIdempotencyRecords
from adapters.memory_store import MemoryEventStore
from domain.base import Event, NotFound, StateConflict
from domain.deployment_slots import DEPLOYMENT_SLOTS, SLOTS_ID, ReserveSlot
from domain.nodes import NODE, RecordHeartbeat
from domain.tasks import (
    TASK,
    AssignTask,
    CancelTask,
    NodeOffer,
    ReportProgress,
    SubmitTask,
    TaskAssigned,
    TaskCancelled,
    TaskProgressed,
)
from handlers.commands import CommandContext, CommandService, TooManyConflicts
from handlers.ports import AppendResult, ConcurrencyConflict, StoreFull
from slices.catalogue import CATALOGUE
from tests import task_events
from tests.unit.conftest import Stage

NOW = datetime.now(UTC)


# Tasks in these stories may be attempted twice, so a lost lease requeues them.
submitted = functools.partial(task_events.submitted, max_attempts=2)


def assigned(task_id: str = "t1", node: str = "n1", attempt: int = 1) -> TaskAssigned:
    deadline = NOW + timedelta(seconds=90)
    return TaskAssigned(task_id=task_id, node_id=node, attempt=attempt, lease_deadline=deadline)


def progress(percent: float, task_id: str = "t1") -> ReportProgress:
    return ReportProgress(task_id=task_id, node_id="n1", percent=percent, at=NOW)


async def test_a_command_is_decided_on_the_recorded_events_and_appended(stage: Stage) -> None:
    await stage.given(TASK, "t1", submitted())

    outcome = await stage.commands.execute(
        TASK, "t1", AssignTask(task_id="t1", node_id="n1", offer=NodeOffer(), at=NOW)
    )

    assert await stage.recorded(TASK, "t1") == ["TaskSubmitted", "TaskAssigned"]
    assert (outcome.first_seq, outcome.last_seq, outcome.events) == (2, 2, ("TaskAssigned",))
    [decided] = outcome.decided
    assert isinstance(decided, TaskAssigned) and decided.attempt == 1


async def test_a_refused_command_appends_nothing(stage: Stage) -> None:
    seq = await stage.given(TASK, "t1", submitted(), TaskCancelled(task_id="t1", reason=""))

    with pytest.raises(StateConflict) as refused:
        await stage.commands.execute(TASK, "t1", CancelTask(task_id="t1"))

    assert refused.value.code == "task_finished"
    assert await stage.store.last_seq() == seq


async def test_a_command_already_satisfied_answers_the_current_version(stage: Stage) -> None:
    reserve = ReserveSlot(deployment_id="d1", limit=3, owner="ann", at=NOW)
    first = await stage.commands.execute(DEPLOYMENT_SLOTS, SLOTS_ID, reserve)

    again = await stage.commands.execute(DEPLOYMENT_SLOTS, SLOTS_ID, reserve)

    assert again.events == ()
    assert (again.first_seq, again.last_seq) == (first.last_seq, first.last_seq)
    assert await stage.store.last_seq() == first.last_seq


async def test_a_writer_that_lost_the_race_decides_again_on_the_newer_events(stage: Stage) -> None:
    here = stage.commands
    elsewhere = CommandService(stage.store, stage.idempotency)  # another service process
    await here.execute(TASK, "t1", SubmitTask(task_id="t1", code="print(1)", owner="ann"))
    await here.execute(
        TASK, "t1", AssignTask(task_id="t1", node_id="n1", offer=NodeOffer(), at=NOW)
    )
    await elsewhere.execute(TASK, "t1", progress(10))  # `here` has not seen this one

    outcome = await here.execute(TASK, "t1", progress(50))

    assert await stage.recorded(TASK, "t1") == [
        "TaskSubmitted",
        "TaskAssigned",
        "TaskProgressed",
        "TaskProgressed",
    ]
    assert outcome.last_seq == 4


async def test_racing_reports_from_two_processes_all_land_in_some_order(stage: Stage) -> None:
    await stage.given(TASK, "t1", submitted(), assigned())
    services = [stage.commands, CommandService(stage.store, stage.idempotency)]

    outcomes = await asyncio.gather(
        *(services[p % 2].execute(TASK, "t1", progress(p)) for p in range(10))
    )

    history = await stage.store.history("task", "t1")
    assert sorted(o.last_seq for o in outcomes) == [e.seq for e in history[2:]]
    assert sorted(e.payload["percent"] for e in history[2:]) == list(range(10))


class ContestedStore(MemoryEventStore):
    """Another writer always gets in first: it reports progress just before each of our appends."""

    async def append(
        self,
        aggregate: str,
        aggregate_id: str,
        events: Sequence[Event],
        expected_version: int,
        **options: Any,
    ) -> AppendResult:
        rival = TaskProgressed(task_id=aggregate_id, node_id="n1", percent=1, message="rival")
        if expected_version > 0:
            await super().append(aggregate, aggregate_id, [rival], expected_version)
        return await super().append(aggregate, aggregate_id, events, expected_version, **options)


async def test_a_writer_that_loses_every_race_gives_up_with_too_many_conflicts() -> None:
    store = ContestedStore(CATALOGUE.aggregates)
    commands = CommandService(store, MemoryIdempotencyRecords(), max_retries=3)
    await store.append("task", "t1", [submitted(), assigned()], 0)

    with pytest.raises(TooManyConflicts) as gave_up:
        await commands.execute(TASK, "t1", progress(50))

    assert isinstance(gave_up.value, ConcurrencyConflict)  # answered as 409 concurrency_conflict
    history = await store.history("task", "t1")
    assert [e.payload["message"] for e in history[2:]] == ["rival"] * 3


async def test_a_resent_command_answers_like_the_first_and_appends_nothing(stage: Stage) -> None:
    await stage.given(TASK, "t1", submitted())
    resend = CommandContext(idempotency_key="cancel-once")

    first = await stage.commands.execute(TASK, "t1", CancelTask(task_id="t1"), resend)
    again = await stage.commands.execute(TASK, "t1", CancelTask(task_id="t1"), resend)
    # Another service process shares the remembered answers, not the cache.
    elsewhere = CommandService(stage.store, stage.idempotency)
    there = await elsewhere.execute(TASK, "t1", CancelTask(task_id="t1"), resend)

    assert await stage.recorded(TASK, "t1") == ["TaskSubmitted", "TaskCancelled"]
    assert not first.replayed and again.replayed and there.replayed
    assert again == there == replace(first, replayed=True)
    with pytest.raises(StateConflict):  # without the key it is a second cancel
        await stage.commands.execute(TASK, "t1", CancelTask(task_id="t1"))


async def test_a_replayed_answer_brings_its_events_back_from_the_stream(stage: Stage) -> None:
    await stage.given(TASK, "t1", submitted())
    resend = CommandContext(idempotency_key="assign-once")
    assign = AssignTask(task_id="t1", node_id="n1", offer=NodeOffer(), at=NOW)
    await stage.commands.execute(TASK, "t1", assign, resend)

    again = await stage.commands.execute(TASK, "t1", assign, resend)

    assert again.replayed and again.decided == ()
    [event] = await stage.commands.decided_events(TASK, again)
    assert isinstance(event, TaskAssigned) and event.node_id == "n1"


class ForgetfulRecords(MemoryIdempotencyRecords):
    """A sender that dies between its append and remembering the answer."""

    async def put(self, scope: str, key: str, outcome: Any) -> None:
        raise ConnectionError("the process died here")


async def test_a_resend_after_the_first_sender_died_is_answered_from_the_stream(
    stage: Stage,
) -> None:
    await stage.given(TASK, "t1", submitted(), assigned())
    resend = CommandContext(idempotency_key="report-7")
    dying = CommandService(stage.store, ForgetfulRecords())
    with pytest.raises(ConnectionError):
        await dying.execute(TASK, "t1", progress(70), resend)
    seq = await stage.store.last_seq()

    again = await stage.commands.execute(TASK, "t1", progress(70), resend)

    assert await stage.store.last_seq() == seq  # Nats-Msg-Id stopped the second append
    assert (again.replayed, again.last_seq, again.events) == (True, seq, ("TaskProgressed",))


class FullRecords(MemoryIdempotencyRecords):
    """A store whose room the command's own append just took: the answer is not kept."""

    async def put(self, scope: str, key: str, outcome: Any) -> None:
        raise StoreFull("10023: insufficient resources")


async def test_an_answer_without_room_is_told_and_a_resend_deciding_other_events_finds_it(
    stage: Stage,
) -> None:
    full = CommandService(stage.store, FullRecords())
    resend = CommandContext(idempotency_key="first-beat")
    beat = RecordHeartbeat(node_id="n1", at=NOW)

    first = await full.execute(NODE, "n1", beat, resend)  # a new node: joined, heartbeat
    # The node is online now, so the same command decides one event this time: the log still
    # knows the first delivery's two, by the id its first event carries.
    again = await full.execute(NODE, "n1", beat, resend)
    there = await stage.commands.execute(NODE, "n1", beat, resend)

    assert first.events == ("NodeJoined", "NodeHeartbeat") and not first.replayed
    assert again == there == replace(first, replayed=True)
    assert await stage.recorded(NODE, "n1") == ["NodeJoined", "NodeHeartbeat"]
    assert await stage.idempotency.get("node.RecordHeartbeat", "system:first-beat") == there


async def test_a_resend_its_first_delivery_now_refuses_is_answered_from_the_stream(
    stage: Stage,
) -> None:
    await stage.given(TASK, "t1", submitted())
    full = CommandService(stage.store, FullRecords())
    resend = CommandContext(idempotency_key="cancel-once")

    first = await full.execute(TASK, "t1", CancelTask(task_id="t1"), resend)
    again = await full.execute(TASK, "t1", CancelTask(task_id="t1"), resend)

    assert again == replace(first, replayed=True)
    assert await stage.recorded(TASK, "t1") == ["TaskSubmitted", "TaskCancelled"]
    with pytest.raises(StateConflict):  # without the key it is a second cancel
        await full.execute(TASK, "t1", CancelTask(task_id="t1"))


async def test_a_foreign_aggregate_is_refused_as_if_it_did_not_exist(stage: Stage) -> None:
    await stage.given(TASK, "t1", submitted(owner="ann"))
    bob = CommandContext(owner_scope="bob")

    with pytest.raises(NotFound) as foreign:
        await stage.commands.execute(TASK, "t1", CancelTask(task_id="t1"), bob)
    with pytest.raises(NotFound) as missing:
        await stage.commands.execute(TASK, "t2", CancelTask(task_id="t2"), bob)

    assert foreign.value.code == missing.value.code == "task_not_found"
    assert await stage.recorded(TASK, "t1") == ["TaskSubmitted"]


async def test_commands_picked_from_a_projection_count_only_those_accepted(stage: Stage) -> None:
    await stage.given(TASK, "t1", submitted("t1"))
    await stage.given(TASK, "t2", submitted("t2"), TaskCancelled(task_id="t2", reason=""))

    accepted = await stage.commands.execute_each(
        TASK,
        [(t, CancelTask(task_id=t, reason="sweep")) for t in ("t1", "t2", "t3")],
        CommandContext(),
    )

    assert accepted == 1
    assert await stage.recorded(TASK, "t1") == ["TaskSubmitted", "TaskCancelled"]
    assert await stage.recorded(TASK, "t2") == ["TaskSubmitted", "TaskCancelled"]
    assert await stage.recorded(TASK, "t3") == []
