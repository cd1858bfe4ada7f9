"""Building blocks every aggregate shares.

An aggregate is a pair of pure functions: ``decide(state, command) -> events`` holds every
invariant, ``evolve(state, event) -> state`` only folds facts that were already accepted. The
adapters persist events and replay them through ``evolve``; nothing here knows about NATS, SQL or
HTTP.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, AnyHttpUrl, AwareDatetime, BaseModel, ConfigDict, Field

# Where an aggregate's owner wants its events POSTed (the webhook dispatcher reads it).
CallbackUrl = AnyHttpUrl

# Times in commands come from clocks (the server's, the timers'): always timezone-aware, so
# the durations between them are defined.
Instant = AwareDatetime
# Durations from settings are bounded, so a time plus one of them can never overflow.
MAX_SECONDS = 10 * 365 * 86_400
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS)]
PositiveSeconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]


def _finite(value: Any) -> Any:
    """JSON has no infinities or NaN: the event store would write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    if isinstance(value, dict):
        for item in value.values():
            _finite(item)
    elif isinstance(value, list):
        for item in value:
            _finite(item)
    return value


# A free-form JSON object in a command (a deployment's config): it must survive the event
# store's JSON round trip unchanged.
JsonObject = Annotated[dict[str, Any], AfterValidator(_finite)]

# Aggregate ids become one token of a NATS subject: no dots, spaces or wildcards.
AGGREGATE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
_AGGREGATE_ID = re.compile(AGGREGATE_ID_PATTERN)


class Event(BaseModel):
    """A fact in past tense. Immutable; ``schema_version`` is bumped when its payload changes."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: ClassVar[int] = 1

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    @classmethod
    def upcast(cls, payload: dict[str, Any], version: int) -> dict[str, Any]:
        """Bring a payload recorded at an older ``schema_version`` up to the current one.

        Recorded events are never rewritten, so every old shape stays readable: each step is a
        classmethod ``upcast_v<n>`` (version n to n+1) on the event class, beside the model it
        changed.
        """
        while version < cls.schema_version:
            step: Callable[[dict[str, Any]], dict[str, Any]] | None = getattr(
                cls, f"upcast_v{version}", None
            )
            if step is None:
                raise LookupError(f"{cls.__name__} has no upcaster from version {version}")
            payload = step(payload)
            version += 1
        return payload


class Command(BaseModel):
    """An intention; ``decide`` answers it with events or refuses it with a ``DomainError``."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DomainError(Exception):
    """A refused command. ``code`` is stable: clients branch on it, so never rename one."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class NotFound(DomainError):
    """The command names an aggregate that has no events."""


class StateConflict(DomainError):
    """The command is well formed but the aggregate's current state does not allow it."""


class Invalid(DomainError):
    """The command breaks a rule that input validation alone cannot see."""


class Gone(DomainError):
    """The command refers to something that existed but has expired (a lease, a key)."""


S = TypeVar("S")


@dataclass(frozen=True)
class Aggregate(Generic[S]):
    """Everything the adapters need to store and rebuild one kind of aggregate."""

    name: str
    initial: Callable[[], S]
    decide: Callable[[S, Any], list[Event]]
    evolve: Callable[[S, Event], S]
    events: tuple[type[Event], ...]
    # Commands that start a new instance: the store may skip loading for them and let the
    # "no events yet" concurrency check prove the instance is new.
    creates: tuple[type[Command], ...] = ()
    # Whose instance it is, for aggregates users own: others are told it does not exist.
    owner_of: Callable[[S], str | None] | None = None
    _by_name: dict[str, type[Event]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Decoding looks an event type up for every message read.
        object.__setattr__(self, "_by_name", {e.type_name(): e for e in self.events})

    def fold(self, events: Sequence[Event], state: S | None = None) -> S:
        current = self.initial() if state is None else state
        for event in events:
            current = self.evolve(current, event)
        return current

    def event_type(self, name: str) -> type[Event]:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.name} has no event type {name!r}") from None


class AggregateIndex:
    """The aggregates one process knows, by the name their events are recorded under.

    Built from the slice catalogue and handed to whoever reads the raw log (decoding and
    upcasting, audit, live-feed visibility), so what a reader knows is explicit: nothing is
    registered by constructing an ``Aggregate``.
    """

    def __init__(self, aggregates: Iterable[Aggregate[Any]]) -> None:
        self._by_name: dict[str, Aggregate[Any]] = {}
        for aggregate in aggregates:
            if aggregate.name in self._by_name:
                raise ValueError(f"two aggregates are named {aggregate.name!r}")
            self._by_name[aggregate.name] = aggregate

    def get(self, name: str) -> Aggregate[Any] | None:
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[Aggregate[Any]]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)


def check_aggregate_id(value: str) -> str:
    """Reject ids that would break the ``ev.<aggregate>.<id>.<Type>`` subject scheme."""
    if not _AGGREGATE_ID.match(value):
        raise ValueError("ids are 1-128 characters of letters, digits, '-' or '_'")
    return value
