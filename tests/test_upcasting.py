"""Events recorded at an older schema_version are read in their current shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pydantic_core

from adapters.envelope import subject_for
from adapters.event_store import JetStreamEventStore
from domain.base import Aggregate, AggregateIndex, Command, Event, Invalid
from slices.catalogue import CATALOGUE
from tests.conftest import Service


class NoteTaken(Event):
    """v1 had ``text``; v2 splits it into ``title`` and ``body``."""

    schema_version: ClassVar[int] = 2
    title: str
    body: str

    @classmethod
    def upcast_v1(cls, payload: dict[str, Any]) -> dict[str, Any]:
        title, _, body = payload["text"].partition("\n")
        return {"title": title, "body": body}


@dataclass(frozen=True)
class Notebook:
    titles: tuple[str, ...] = ()


def decide(state: Notebook, command: Command) -> list[Event]:
    raise Invalid("unknown_command", "read-only in this story")


def evolve(state: Notebook, event: Event) -> Notebook:
    assert isinstance(event, NoteTaken)
    return Notebook(titles=(*state.titles, event.title))


NOTEBOOK = Aggregate[Notebook](
    name="notebook", initial=Notebook, decide=decide, evolve=evolve, events=(NoteTaken,)
)


async def test_a_v1_event_is_read_as_v2(service: Service) -> None:
    # A reader knows the aggregates it is given: this one, beside the catalogue's.
    served = service.runtime.store
    store = JetStreamEventStore(
        served.nc, AggregateIndex([*CATALOGUE.aggregates, NOTEBOOK]), served.settings
    )
    v1 = {
        "event_id": "0190a5f0-0000-7000-8000-000000000001",
        "type": "NoteTaken",
        "schema_version": 1,
        "aggregate": "notebook",
        "aggregate_id": "n1",
        "occurred_at": "2025-01-01T00:00:00+00:00",
        "actor": "old-release",
        "correlation_id": None,
        "causation_id": None,
        "payload": {"text": "shopping\nmilk, eggs"},
    }
    ack = await store.js.publish(
        subject_for("notebook", "n1", "NoteTaken"), pydantic_core.to_json(v1)
    )
    current = await store.append(
        "notebook", "n1", [NoteTaken(title="todo", body="")], expected_version=ack.seq
    )

    [old, new] = await store.history("notebook", "n1")
    assert (old.schema_version, old.payload) == (2, {"title": "shopping", "body": "milk, eggs"})
    assert (new.seq, new.schema_version) == (current.last_seq, 2)
    state, version = await store.load(NOTEBOOK, "n1")
    assert state == Notebook(titles=("shopping", "todo"))
    assert version == current.last_seq
