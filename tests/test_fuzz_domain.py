"""Property-based fuzzing of every aggregate's commands (hypothesis): the domain refuses anything it
cannot accept with a ``DomainError``, and input validation refuses junk with a pydantic
``ValidationError``, never with any other exception (which the edges would answer with a 500).

Commands are drawn from each model's own JSON schema (so most of them pass validation and reach
``decide``), in sequences against one state: each accepted command's events are folded by
``evolve`` before the next one is decided, so the histories are ones the domain itself produced.
Along the way every event must be one its aggregate can decode from the stream, survive the
JSON round trip the event store makes, and ``decide`` must be pure (the same answer twice).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import pkgutil
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import domain
from domain.base import Aggregate, Command, DomainError, Event

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
MAX_DURATION_S = 1e9
# Commands that may bring an aggregate instance into being (besides an aggregate's ``creates``).
CREATE = ("Create", "Start", "Submit", "Register", "Record", "Claim", "Load", "Reserve", "Issue")


def _modules() -> list[ModuleType]:
    return [
        importlib.import_module(f"domain.{m.name}") for m in pkgutil.iter_modules(domain.__path__)
    ]


def _commands_of(module: ModuleType) -> list[type[Command]]:
    return [
        c
        for c in vars(module).values()
        if inspect.isclass(c) and issubclass(c, Command) and c.__module__ == module.__name__
    ]


# Each aggregate with the commands of its module (a module's other aggregate's commands, and its
# value objects, must be refused as unknown commands, which is a DomainError too).
AGGREGATES: list[tuple[Aggregate[Any], list[type[Command]]]] = [
    (aggregate, _commands_of(module))
    for module in _modules()
    for aggregate in vars(module).values()
    if isinstance(aggregate, Aggregate)
]
COMMANDS = sorted({c for _, commands in AGGREGATES for c in commands}, key=lambda c: c.__name__)


def test_every_aggregate_and_command_is_fuzzed() -> None:
    names = {aggregate.name for aggregate, _ in AGGREGATES}
    assert {"task", "render", "deployment", "upload", "file", "node", "execution"} <= names
    assert {"apikey", "content", "deployslots", "scene", "violations", "webhook"} <= names
    assert len(COMMANDS) >= 60


# ---------------------------------------------------------------- values from a JSON schema


def _datetimes() -> st.SearchStrategy[str]:
    """Near a fixed moment, so leases, expiries and lifetimes fall on both sides of each other."""
    offsets = st.integers(-3 * 86_400, 3 * 86_400).map(lambda s: EPOCH + timedelta(seconds=s))
    return offsets.map(datetime.isoformat)


def _integers(schema: dict[str, Any]) -> st.SearchStrategy[int]:
    low = schema.get("minimum", -5)
    if "exclusiveMinimum" in schema:
        low = math.floor(schema["exclusiveMinimum"]) + 1
    high = schema.get("maximum", max(low, 0) + 10**6)
    if "exclusiveMaximum" in schema:
        high = math.ceil(schema["exclusiveMaximum"]) - 1
    # Small values most of the time: offsets, frames and steps then meet the state's own.
    return st.integers(low, min(high, low + 12)) | st.integers(low, high)


def _numbers(schema: dict[str, Any]) -> st.SearchStrategy[float]:
    """Unbounded numbers are durations in seconds (grace, silence, rotation): up to ~30 years,
    since the models allow more than ``timedelta`` holds (see the known failures below)."""
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum", MAX_DURATION_S))
    return st.floats(
        min_value=low,
        max_value=high,
        exclude_min="exclusiveMinimum" in schema,
        exclude_max="exclusiveMaximum" in schema,
        allow_nan=False,
        allow_infinity=False,
    )


def _strings(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if schema.get("format") == "date-time":
        return _datetimes()
    if schema.get("format") == "uri":
        return st.sampled_from(["http://127.0.0.1:9/hook", "https://example.com/a?b=1"])
    if "pattern" in schema:
        strings = st.from_regex(schema["pattern"], fullmatch=True)
    else:
        strings = st.text(min_size=low, max_size=max(low, min(high or 24, 24)))
    return strings.filter(lambda s: len(s) >= low and (high is None or len(s) <= high))


def from_schema(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value valid for a pydantic JSON schema (the keywords its models use)."""
    if "$ref" in schema:
        return st.deferred(lambda: from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs))
    if "anyOf" in schema:
        return st.one_of([from_schema(option, defs) for option in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    match schema.get("type"):
        case "string":
            return _strings(schema)
        case "integer":
            return _integers(schema)
        case "number":
            return _numbers(schema)
        case "boolean":
            return st.booleans()
        case "null":
            return st.none()
        case "array":
            low = schema.get("minItems", 0)
            high = min(schema.get("maxItems", low + 3), low + 3)
            items = from_schema(schema.get("items", {}), defs)
            return st.lists(items, min_size=low, max_size=high)
        case "object":
            return _objects(schema, defs)
    return JUNK


def _objects(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, defs) for k, v in properties.items() if k in required},
            optional={k: from_schema(v, defs) for k, v in properties.items() if k not in required},
        )
    values = schema.get("additionalProperties", {})
    keys = _strings(schema.get("propertyNames", {"type": "string", "maxLength": 12}))
    return st.dictionaries(
        keys, from_schema(values if isinstance(values, dict) else {}, defs), max_size=3
    )


@functools.cache
def command_data(model: type[Command]) -> st.SearchStrategy[dict[str, Any]]:
    schema = model.model_json_schema()
    return _objects(schema, schema.get("$defs", {}))


@functools.cache
def commands(models: tuple[type[Command], ...]) -> st.SearchStrategy[Command | None]:
    """A command of one of ``models``; None when the drawn data still fails validation (a
    cross-field rule the schema cannot say): that data is junk, checked below."""

    def build(pair: tuple[type[Command], dict[str, Any]]) -> Command | None:
        model, data = pair
        try:
            return model.model_validate(data)
        except ValidationError:
            return None

    return st.one_of(
        [command_data(m).map(lambda data, m=m: (m, data)) for m in models]  # type: ignore[misc]
    ).map(build)


JUNK: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["", "0", "-1", "1e309", "NaN", "2026-13-45T25:61:00", "../x", "a.b.>"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


# ---------------------------------------------------------------- the properties


def decide_or_refuse(aggregate: Aggregate[Any], state: Any, command: Command) -> list[Event]:
    """``decide`` answers events or a DomainError; the events are the aggregate's own, survive
    the event store's JSON round trip, and are the same when asked twice."""
    try:
        events = aggregate.decide(state, command)
    except DomainError as refused:
        assert refused.code and refused.message
        return []
    assert isinstance(events, list)
    assert events == aggregate.decide(state, command), "decide is not pure"
    for event in events:
        assert type(event) in aggregate.events, f"{type(event).__name__} cannot be read back"
        restored = type(event).model_validate_json(event.model_dump_json())
        assert restored == event, f"{type(event).__name__} changes in the stream"
    return events


@pytest.mark.parametrize(("aggregate", "models"), AGGREGATES, ids=[a.name for a, _ in AGGREGATES])
@FUZZ
@given(data=st.data())
def test_decide_returns_events_or_a_domain_error_and_evolve_folds_them(
    aggregate: Aggregate[Any], models: list[type[Command]], data: st.DataObject
) -> None:
    # Given a history the aggregate produced itself, from a sequence of arbitrary commands that
    # starts with one or two that may create an instance (else most would find none)
    creators = tuple(m for m in models if m in aggregate.creates or m.__name__.startswith(CREATE))
    opening = st.lists(commands(creators or tuple(models)), min_size=1, max_size=2)
    sequence = data.draw(opening) + data.draw(st.lists(commands(tuple(models)), max_size=10))
    state = aggregate.initial()
    for command in sequence:
        if command is None:
            continue
        # When each command is decided on the state so far
        events = decide_or_refuse(aggregate, state, command)
        # Then evolve folds whatever decide produced
        state = aggregate.fold(events, state)


@pytest.mark.parametrize("model", COMMANDS, ids=[c.__name__ for c in COMMANDS])
@settings(FUZZ, max_examples=25)
@given(data=st.data())
def test_junk_is_refused_by_validation_only(model: type[Command], data: st.DataObject) -> None:
    # Given valid-looking data with fields replaced, dropped or added as junk, or no object at all
    fields = list(model.model_fields)
    valid = data.draw(command_data(model))
    junk = data.draw(
        st.one_of(
            st.fixed_dictionaries({}, optional={f: JUNK for f in fields}).map(
                lambda bad: {**valid, **bad}
            ),
            st.dictionaries(st.sampled_from(fields) | st.text(max_size=8), JUNK, max_size=6),
            JUNK,
        )
    )
    # When it is validated as the command
    try:
        command = model.model_validate(junk)
    except ValidationError as refused:
        # Then it is refused by validation, saying where
        assert refused.errors()
        return
    # (or it happened to be valid: then the domain decides it as any other command)
    for aggregate, models in AGGREGATES:
        if model in models:
            decide_or_refuse(aggregate, aggregate.initial(), command)


@pytest.mark.parametrize("model", COMMANDS, ids=[c.__name__ for c in COMMANDS])
@settings(max_examples=15, deadline=None, database=None)
@given(raw=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_undecodable_bytes_are_a_validation_error(model: type[Command], raw: bytes) -> None:
    # The NATS command subjects validate raw message bodies this way.
    with pytest.raises(ValidationError):
        model.model_validate_json(raw)


# ---------------------------------------------------------------- what the fuzzing found
# Commands that once validated but made ``decide`` raise something other than a DomainError: an
# unbounded duration overflowed a datetime, a naive ``at`` could not be compared with an aware
# one. Durations are now bounded (``domain.base.Seconds``) and times must be aware
# (``domain.base.Instant``), so the models refuse them.

NOON = EPOCH


def test_an_enormous_lease_grace_is_refused_by_the_model() -> None:
    from domain.tasks import AssignTask, NodeOffer

    with pytest.raises(ValidationError, match="lease_grace_s"):
        AssignTask(task_id="t", node_id="n", offer=NodeOffer(), at=NOON, lease_grace_s=2.6e11)


def test_an_enormous_silence_is_refused_by_the_model() -> None:
    from domain.nodes import MarkNodeOffline

    with pytest.raises(ValidationError, match="silence_s"):
        MarkNodeOffline(node_id="n", at=NOON, silence_s=8.64e13)


def test_a_naive_time_is_refused_by_the_model() -> None:
    from domain.nodes import MarkNodeOffline

    naive = EPOCH.replace(tzinfo=None) + timedelta(hours=1)
    with pytest.raises(ValidationError, match="timezone"):
        MarkNodeOffline(node_id="n", at=naive, silence_s=60)
