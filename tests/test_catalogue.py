"""The catalogue is the one list of slices: every aggregate is served, and the read side's
vocabulary (subject filters, event names) comes from the domain it reads."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from types import ModuleType
from typing import Any

import domain
import projections
from adapters.envelope import events_of
from domain.base import Aggregate
from projections.base import Projection
from slices.catalogue import CATALOGUE

EVENT_NAME = re.compile(r"^[A-Z][A-Za-z]+$")


def _modules(package: ModuleType) -> list[ModuleType]:
    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
    ]


def test_every_aggregate_of_the_domain_is_in_the_catalogue() -> None:
    """An aggregate missing here would be recorded but never decoded, upcast or audited."""
    defined = {
        value.name
        for module in _modules(domain)
        for value in vars(module).values()
        if isinstance(value, Aggregate)
    }
    assert defined == {aggregate.name for aggregate in CATALOGUE.aggregates}


def test_every_projection_is_in_the_catalogue_and_reads_its_aggregate_subjects() -> None:
    defined = {
        value.name
        for module in _modules(projections)
        for value in vars(module).values()
        if isinstance(value, Projection)
    }
    assert defined == {projection.name for projection in CATALOGUE.projections}
    for projection in CATALOGUE.projections:
        assert projection.subject_filter == events_of(projection.source)


def _event_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Event type names a projection function matches on: ``case "X"`` patterns and
    comparisons of ``<something>.type`` with string literals."""
    names: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.MatchValue) and isinstance(node.value, ast.Constant):
            names.add(node.value.value)
        elif isinstance(node, ast.Compare) and any(
            isinstance(side, ast.Attribute) and side.attr == "type"
            for side in (node.left, *node.comparators)
        ):
            for side in ast.walk(node):
                if isinstance(side, ast.Constant) and isinstance(side.value, str):
                    names.add(side.value)
    return {name for name in names if EVENT_NAME.match(name)}


def test_every_event_name_a_projection_handles_exists_in_its_aggregate() -> None:
    """A misspelt ``case "TaskSubmited"`` would silently never match: each function of a
    projection module may only name event types of one aggregate that module projects."""
    by_module: dict[str, list[Aggregate[Any]]] = {}
    for projection in CATALOGUE.projections:
        by_module.setdefault(_module_of(projection), []).append(projection.source)
    checked = 0
    for module_name, sources in by_module.items():
        module = importlib.import_module(module_name)
        tree = ast.parse(inspect.getsource(module))
        known = {a.name: {e.type_name() for e in a.events} for a in sources}
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            names = _event_names(function)
            if not names:
                continue
            owners = [agg for agg, events in known.items() if names <= events]
            assert owners, f"{module_name}.{function.name} names unknown events: {sorted(names)}"
            checked += len(names)
    assert checked >= 40  # the task, render, deployment, file … projections' cases


def _module_of(projection: Projection) -> str:
    """The module that defines a projection (where its ``case`` statements live)."""
    for module in _modules(projections):
        if any(value is projection for value in vars(module).values()):
            return module.__name__
    raise LookupError(projection.name)


def test_webhook_sources_read_a_callback_of_their_aggregate() -> None:
    for name, source in CATALOGUE.webhook_sources.items():
        assert source.aggregate.name == name
        assert source.url_of(source.aggregate.initial()) is None
