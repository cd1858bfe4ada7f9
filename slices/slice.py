"""What a slice declares, and the catalogue that the service, the app and the readers iterate.

A slice is one idea of the product (compute tasks, render jobs, deployments, …): its aggregates,
the projections that read them, its HTTP controllers, its NATS command subjects, its timer
checks, its process managers and the webhook sources of its aggregates. The composition root
(``api.runtime``), the app (``api.app``), the timer loop, the webhook dispatcher, event decoding,
audit and live-feed visibility take everything they need from the catalogue, so adding a slice is
its own modules plus one line in ``slices.catalogue``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from faststream.nats import NatsBroker
from litestar import Router
from litestar.types import ControllerRouterHandler

from domain.base import Aggregate, AggregateIndex
from handlers.webhooks import WebhookSource
from projections.base import Projection

if TYPE_CHECKING:
    from api.runtime import Runtime
    from api.settings import Settings

# Each piece is wired to the running service by a small function of the runtime, so a slice
# names what it needs (the command service, sessions, a setting) where it declares it.
Subjects = Callable[[NatsBroker, "Runtime"], None]
TimerCheck = Callable[["Runtime", datetime], Awaitable[int]]
ProcessManager = Callable[["Runtime"], Awaitable[asyncio.Task[None]]]
Seed = Callable[["Runtime"], Awaitable[None]]
# A seed adapter: the router of a seed's own paths outside /api/v1, where the settings put it
# (None: turned off).
Mount = Callable[["Settings"], Router | None]


@dataclass(frozen=True)
class Slice:
    name: str
    aggregates: tuple[Aggregate[Any], ...] = ()
    projections: tuple[Projection, ...] = ()
    routes: tuple[ControllerRouterHandler, ...] = ()
    subjects: tuple[Subjects, ...] = ()
    timers: tuple[TimerCheck, ...] = ()
    process_managers: tuple[ProcessManager, ...] = ()
    webhooks: tuple[WebhookSource, ...] = ()
    # Records made at start when they are missing (a catalogue loaded from a file, say).
    seeds: tuple[Seed, ...] = ()
    # Routers mounted outside /api/v1: a seed's clients keep their own paths.
    mounts: tuple[Mount, ...] = ()

    def __post_init__(self) -> None:
        own = {a.name for a in self.aggregates}
        for projection in self.projections:
            if projection.source.name not in own:
                raise ValueError(
                    f"slice {self.name}: projection {projection.name} reads "
                    f"{projection.source.name}, which is not one of its aggregates"
                )
        for source in self.webhooks:
            if source.aggregate.name not in own:
                raise ValueError(f"slice {self.name}: webhooks of a foreign aggregate")


class Catalogue:
    """Every slice of one build, in the order their pieces are started and mounted."""

    def __init__(self, slices: Iterable[Slice]) -> None:
        self.slices = tuple(slices)
        names = [s.name for s in self.slices]
        if len(set(names)) != len(names):
            raise ValueError(f"slice names repeat: {names}")
        self.aggregates = AggregateIndex(a for s in self.slices for a in s.aggregates)
        self.projections = tuple(p for s in self.slices for p in s.projections)
        if len({p.name for p in self.projections}) != len(self.projections):
            raise ValueError("two projections share a name (and so a checkpoint)")
        self.routes = tuple(r for s in self.slices for r in s.routes)
        self.subjects = tuple(x for s in self.slices for x in s.subjects)
        self.timers = tuple(t for s in self.slices for t in s.timers)
        self.process_managers = tuple(p for s in self.slices for p in s.process_managers)
        self.seeds = tuple(x for s in self.slices for x in s.seeds)
        self.mounts = tuple(m for s in self.slices for m in s.mounts)
        self.webhook_sources: Mapping[str, WebhookSource] = {
            w.aggregate.name: w for s in self.slices for w in s.webhooks
        }

    def projection(self, name: str) -> Projection:
        for projection in self.projections:
            if projection.name == name:
                return projection
        raise KeyError(f"no projection named {name!r}")
