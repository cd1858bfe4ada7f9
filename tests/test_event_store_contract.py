"""The event store port's contract, held by the JetStream store and by the in-memory one alike.

Every story runs twice: on a fresh stream of the session's nats-server and on a fresh
``MemoryEventStore``. The fast tier (tests/unit) trusts the memory store because of this file.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from adapters.envelope import Metadata
from adapters.event_store import JetStreamEventStore, StreamSettings
from adapters.memory_store import MemoryEventStore
from adapters.nats_server import EmbeddedNatsServer
from domain.tasks import TASK, TaskSubmitted
from handlers.ports import (
    AppendResult,
    ConcurrencyConflict,
    DuplicateAppend,
    EventStore,
    EventStoreError,
    EventTooLarge,
)
from slices.catalogue import CATALOGUE
from tests.task_events import progressed, submitted


@pytest.fixture
def settings() -> StreamSettings:
    return StreamSettings(name=f"C{uuid.uuid4().hex[:10].upper()}")


@pytest.fixture
async def jetstream_store(
    nats_server: EmbeddedNatsServer, settings: StreamSettings
) -> AsyncIterator[JetStreamEventStore]:
    store = await JetStreamEventStore.connect(nats_server.url, CATALOGUE.aggregates, settings)
    yield store
    await store.js.delete_stream(settings.name)
    await store.close()


@pytest.fixture
def memory_store(settings: StreamSettings) -> MemoryEventStore:
    return MemoryEventStore(CATALOGUE.aggregates, settings)


@pytest.fixture(params=["jetstream_store", "memory_store"])
def store(request: pytest.FixtureRequest) -> EventStore:
    """Only the JetStream case needs the nats-server."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


async def test_events_get_one_global_sequence_and_come_back_as_recorded(
    store: EventStore,
) -> None:
    assert await store.last_seq() == 0
    meta = Metadata(actor="ann", correlation_id="c-1", causation_id="cmd-1")
    a = await store.append("task", "a", [submitted("a")], 0, metadata=meta)
    b = await store.append("task", "b", [submitted("b"), progressed("b", 5)], 0)
    assert (a.first_seq, a.last_seq, b.first_seq, b.last_seq) == (1, 1, 2, 3)
    assert await store.last_seq() == 3

    [first] = await store.history("task", "a")
    assert (first.seq, first.type, first.aggregate_id) == (1, "TaskSubmitted", "a")
    assert (first.actor, first.correlation_id, first.causation_id) == ("ann", "c-1", "cmd-1")
    assert first.payload["owner"] == "ann"
    assert first.schema_version == TaskSubmitted.schema_version
    assert (await store.get(3)).type == "TaskProgressed"
    assert [e.seq for e in await store.read_subject("ev.task.>", from_seq=2)] == [2, 3]


async def test_subject_filters_match_token_by_token(store: EventStore) -> None:
    await store.append("task", "a", [submitted("a")], 0)
    await store.append("task", "b", [submitted("b"), progressed("b", 1)], 0)
    await store.append("node", "a", [progressed("a", 1)], 0)

    async def ids(subject_filter: str) -> list[tuple[str, str, str]]:
        return [
            (e.aggregate, e.aggregate_id, e.type) for e in await store.read_subject(subject_filter)
        ]

    assert len(await ids("ev.>")) == 4
    assert await ids("ev.*.a.*") == [
        ("task", "a", "TaskSubmitted"),
        ("node", "a", "TaskProgressed"),
    ]
    assert await ids("ev.task.*.TaskProgressed") == [("task", "b", "TaskProgressed")]
    assert await ids("ev.task.b.>") == [
        ("task", "b", "TaskSubmitted"),
        ("task", "b", "TaskProgressed"),
    ]
    assert await ids("ev.*") == []
    assert await ids("ev.task") == []
    assert await ids("ev.task.a") == []


async def test_an_append_on_a_stale_version_is_a_conflict(store: EventStore) -> None:
    first = await store.append("task", "t1", [submitted("t1")], 0)
    with pytest.raises(ConcurrencyConflict):
        await store.append("task", "t1", [submitted("t1")], 0)
    with pytest.raises(ConcurrencyConflict):
        await store.append("task", "t1", [progressed("t1", 1)], first.last_seq + 5)
    await store.append("task", "other", [submitted("other")], 0)
    moved = await store.append("task", "t1", [progressed("t1", 1)], first.last_seq)
    assert moved.last_seq == 3
    state, version = await store.load(TASK, "t1")
    assert state.exists and version == 3
    assert await store.load(TASK, "unknown") == (TASK.initial(), 0)
    assert await store.history("task", "unknown") == []


async def test_of_writers_racing_on_one_version_exactly_one_wins(store: EventStore) -> None:
    first = await store.append("task", "t1", [submitted("t1")], 0)
    racers = [
        store.append("task", "t1", [progressed("t1", p)], first.last_seq) for p in (10, 20, 30, 40)
    ]
    results = await asyncio.gather(*racers, return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ConcurrencyConflict) for r in results if r not in winners)
    assert await store.last_seq() == winners[0].last_seq == 2


async def test_a_batch_is_stored_all_or_nothing(store: EventStore) -> None:
    batch = [submitted("t1"), progressed("t1", 1), progressed("t1", 2)]
    result = await store.append("task", "t1", batch, 0)
    assert (result.first_seq, result.last_seq) == (1, 3)

    with pytest.raises(ConcurrencyConflict):
        await store.append("task", "t1", [progressed("t1", 3), progressed("t1", 4)], 0)
    too_big = [progressed("t1", 5), progressed("t1", 6).model_copy(update={"message": "x" * 2**21})]
    with pytest.raises(EventTooLarge):
        await store.append("task", "t1", too_big, 3)
    with pytest.raises(EventTooLarge):  # the first of a batch too, whose refusal goes unheard
        await store.append("task", "t1", list(reversed(too_big)), 3)
    with pytest.raises(EventStoreError):
        await store.append("task", "t1", [progressed("t1", 7)] * 1001, 3)
    with pytest.raises(ValueError):
        await store.append("task", "t1", [], 3)
    assert await store.last_seq() == 3
    assert [e.seq for e in await store.history("task", "t1")] == [1, 2, 3]


async def test_a_resent_single_event_is_checked_for_its_version_then_answered_as_a_duplicate(
    store: EventStore,
) -> None:
    first = await store.append("task", "t1", [submitted("t1")], 0, idempotency_key="k-1")
    with pytest.raises(ConcurrencyConflict):
        await store.append("task", "t1", [submitted("t1")], 0, idempotency_key="k-1")
    again = await store.append(
        "task", "t1", [progressed("t1", 1)], first.last_seq, idempotency_key="k-1"
    )
    assert again.duplicate
    assert (again.first_seq, again.last_seq) == (first.first_seq, first.last_seq)
    assert await store.last_seq() == 1


async def test_a_resent_batch_is_refused_as_a_duplicate_before_its_version_is_checked(
    store: EventStore,
) -> None:
    batch = [submitted("t1"), progressed("t1", 1)]
    first = await store.append("task", "t1", batch, 0, idempotency_key="k-2")
    with pytest.raises(DuplicateAppend):
        await store.append("task", "t1", batch, 0, idempotency_key="k-2")
    with pytest.raises(DuplicateAppend):
        await store.append(
            "task", "t2", [submitted("t2"), progressed("t2", 1)], 0, idempotency_key="k-2"
        )
    # The first event of a batch carries the key itself, the others "<key>:<n>": a resend that
    # decides a single event meets the first one.
    single = await store.append("task", "t3", [submitted("t3")], 0, idempotency_key="k-2")
    assert single.duplicate and single.last_seq == first.first_seq
    with pytest.raises(DuplicateAppend):
        await store.append("task", "t4", [submitted("t4")] * 2, 0, idempotency_key="k-2:2")
    assert await store.last_seq() == 2


async def test_the_log_says_where_a_keyed_append_went_and_the_question_stores_nothing(
    store: EventStore,
) -> None:
    await store.append("task", "t0", [submitted("t0")], 0)
    single = await store.append("task", "t1", [submitted("t1")], 0, idempotency_key="k-single")
    batch = [submitted("t2"), progressed("t2", 1), progressed("t2", 2)]
    several = await store.append("task", "t2", batch, 0, idempotency_key="k-batch")

    assert await store.appended("task", "t1", "k-single") == AppendResult(2, 2, duplicate=True)
    assert await store.appended("task", "t2", "k-batch") == AppendResult(3, 5, duplicate=True)
    for unknown in ("k-never", "k-batch:9", "k-single:2"):
        assert await store.appended("task", "t2", unknown) is None
    # Each append is found in its own aggregate's history only.
    assert await store.appended("task", "t2", "k-single") is None
    assert await store.last_seq() == several.last_seq == 5
    assert [e.seq for e in await store.read_subject("ev.>")] == [1, single.last_seq, 3, 4, 5]


async def test_first_is_the_earliest_match_or_none(store: EventStore) -> None:
    assert await store.first("ev.>") is None
    await store.append("task", "a", [submitted("a")], 0)
    await store.append("task", "b", [submitted("b"), progressed("b", 1)], 0)
    found = await store.first("ev.task.b.*")
    assert found is not None and (found.seq, found.type) == (2, "TaskSubmitted")
    progress = await store.first("ev.*.*.TaskProgressed")
    assert progress is not None and progress.seq == 3
    assert await store.first("ev.node.>") is None


async def test_pages_hold_a_thousand_events_and_count_what_remains(store: EventStore) -> None:
    assert await store.read_page("ev.>", 1) == ([], 0)
    version = (
        await store.append("task", "big", [submitted("big")] + [progressed("big", 1)] * 999, 0)
    ).last_seq
    await store.append("task", "small", [submitted("small")], 0)
    version = (await store.append("task", "big", [progressed("big", 2)] * 500, version)).last_seq

    page, pending = await store.read_page("ev.task.big.*", 0)
    assert (len(page), page[0].seq, page[-1].seq, pending) == (1000, 1, 1000, 500)
    page, pending = await store.read_page("ev.task.big.*", page[-1].seq + 1)
    assert (len(page), page[0].seq, page[-1].seq, pending) == (500, 1002, 1501, 0)
    assert await store.read_page("ev.task.big.*", version + 1) == ([], 0)
    page, pending = await store.read_page("ev.>", 1)
    assert (len(page), pending) == (1000, 501)
    history = await store.history("task", "big")
    assert len(history) == 1500 and history[-1].seq == version
