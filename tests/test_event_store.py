"""The JetStream event store: versions, conflicts, atomic multi-event appends, fast loads."""

from __future__ import annotations

import asyncio

import pytest

from api.runtime import Runtime
from domain.tasks import TASK, TaskSubmitted
from handlers.ports import ConcurrencyConflict
from tests.conftest import Service
from tests.task_events import progressed, submitted


@pytest.fixture
def runtime(service: Service) -> Runtime:
    return service.runtime


async def test_two_writers_on_one_version_never_both_win(runtime: Runtime) -> None:
    store = runtime.store
    first = await store.append("task", "t1", [submitted("t1")], expected_version=0)
    racers = [
        store.append("task", "t1", [progressed("t1", p)], expected_version=first.last_seq)
        for p in (10, 20, 30, 40)
    ]
    results = await asyncio.gather(*racers, return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, ConcurrencyConflict)]
    assert len(winners) == 1
    assert len(losers) == 3
    _, version = await store.load(TASK, "t1")
    assert version == winners[0].last_seq


async def test_a_new_aggregate_is_expected_at_version_zero(runtime: Runtime) -> None:
    store = runtime.store
    await store.append("task", "t1", [submitted("t1")], expected_version=0)
    with pytest.raises(ConcurrencyConflict):
        await store.append("task", "t1", [submitted("t1")], expected_version=0)


async def test_other_aggregates_do_not_move_the_version(runtime: Runtime) -> None:
    store = runtime.store
    first = await store.append("task", "a", [submitted("a")], expected_version=0)
    await store.append("task", "b", [submitted("b")], expected_version=0)
    await store.append("task", "a", [progressed("a", 1)], expected_version=first.last_seq)


async def test_several_events_are_appended_atomically_or_not_at_all(runtime: Runtime) -> None:
    store = runtime.store
    batch = [submitted("t1"), progressed("t1", 1), progressed("t1", 2)]
    result = await store.append("task", "t1", batch, expected_version=0)
    assert result.last_seq - result.first_seq == 2
    history = await store.history("task", "t1")
    assert [e.type for e in history] == ["TaskSubmitted", "TaskProgressed", "TaskProgressed"]
    assert [e.seq for e in history] == list(range(result.first_seq, result.last_seq + 1))

    before = await store.last_seq()
    with pytest.raises(ConcurrencyConflict):
        await store.append("task", "t1", [progressed("t1", 3), progressed("t1", 4)], 0)
    assert await store.last_seq() == before


async def test_envelope_carries_metadata(runtime: Runtime) -> None:
    from adapters.envelope import Metadata

    meta = Metadata(actor="ann", correlation_id="c-1", causation_id="cmd-1")
    await runtime.store.append("task", "t1", [submitted("t1")], 0, metadata=meta)
    [event] = await runtime.store.history("task", "t1")
    assert (event.actor, event.correlation_id, event.causation_id) == ("ann", "c-1", "cmd-1")
    assert event.schema_version == TaskSubmitted.schema_version  # 2 since tasks ask for network
    assert len(event.event_id) == 36
    assert event.payload["owner"] == "ann"


async def test_long_histories_are_read_across_pages(runtime: Runtime) -> None:
    store = runtime.store
    version = (await store.append("task", "big", [submitted("big")], 0)).last_seq
    for chunk in range(25):
        events = [progressed("big", i % 100) for i in range(100)]
        version = (await store.append("task", "big", events, version)).last_seq
        await store.append("task", f"other{chunk}", [submitted(f"other{chunk}")], 0)
    state, loaded_version = await store.load(TASK, "big")
    assert loaded_version == version
    history = await store.history("task", "big")
    assert len(history) == 1 + 2_500
    assert all(e.aggregate_id == "big" for e in history)
    assert [e.seq for e in history] == sorted(e.seq for e in history)
    assert state.exists
