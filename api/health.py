"""GET /api/v1/health: is every part of the service working, and how far behind are the reads.

Public, so it says whether NATS works and whether the service authenticates to it, but where
the server listens only to an admin: the address is no business of an anonymous caller.

A parked event (``domain.parking``) or a halted projection leaves the service ``degraded`` too:
its read model misses an event until an operator retries or skips it (``/api/v1/parked``).

A full event store leaves reads working and refuses every write (507 ``event_store_full``), so
the service answers ``degraded`` (503) until the log can take the refused append again.
"""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any, Literal

import psutil
from litestar import Controller, Request, Response, get
from nats.errors import Error as NatsError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.answers import Answer, Sparse
from api.auth import principal_of
from api.http import PUBLIC, Rt
from domain.access import Role
from handlers.parking import parked_counts
from handlers.projector import consumer_name, events_behind

# The installed distribution's version: pyproject.toml is its one source.
VERSION = version("jetflow")
Verdict = Literal["healthy", "unhealthy"]
Overall = Literal["healthy", "degraded", "unhealthy"]


class NatsHealth(Sparse):
    status: Verdict
    server: Literal["embedded", "external"] | None = None
    authenticated: bool | None = None
    # Where NATS listens is shown to admins only.
    url: str | None = None
    error: str | None = None


class StreamHealth(Answer):
    status: Literal["healthy"]
    name: str
    messages: int
    last_seq: int


class EventStoreHealth(Answer):
    """``full``: the latest append was refused for want of room and the log cannot take it yet.
    ``limit_bytes``: the stream's own limit, else the account's; None when only the server's
    ``max_file_store`` applies (JetStream does not show it to clients)."""

    status: Literal["ok", "full"]
    used_bytes: int
    limit_bytes: int | None


class ProjectionLag(Answer):
    """``parked_events``: events set aside, still unresolved; ``halted``: this process stopped
    the projection on an event that kept failing (its policy is ``halt``)."""

    applied_seq: int
    lag_events: int
    parked_events: int
    halted: bool


class DatabaseHealth(Sparse):
    status: Verdict
    dialect: str | None = None
    error: str | None = None


class SystemHealth(Answer):
    cpu_percent: float
    memory_percent: float
    disk_percent: float
    disk_free_bytes: int


class HealthComponents(Sparse):
    """Each part's health; ``stream``, ``event_store`` and ``projections`` only when NATS
    answered."""

    nats: NatsHealth
    stream: StreamHealth | None = None
    event_store: EventStoreHealth | None = None
    projections: dict[str, ProjectionLag] | None = None
    database: DatabaseHealth
    system: SystemHealth


class Health(Answer):
    status: Overall
    version: str
    timestamp: float
    components: HealthComponents


class HealthController(Controller):
    path = "/"
    tags = ["system"]

    @get(
        "/health",
        opt=PUBLIC,
        summary="Health of NATS, the stream, the database and the projections",
    )
    async def health(self, request: Request[Any, Any, Any], runtime: Rt) -> Response[Health]:
        components: dict[str, Any] = {}
        healthy = True
        full = False
        parked: dict[str, int] = {}
        try:
            async with runtime.sessions() as session:
                await session.execute(text("SELECT 1"))
                parked = await parked_counts(session)
            components["database"] = DatabaseHealth(
                status="healthy", dialect=runtime.engine.dialect.name
            )
        except SQLAlchemyError as error:
            healthy = False
            components["database"] = DatabaseHealth(status="unhealthy", error=type(error).__name__)
        try:
            info = await runtime.store.js.stream_info(runtime.store.stream)
            principal = principal_of(request)
            admin = principal is not None and principal.role is Role.admin
            components["nats"] = NatsHealth(
                status="healthy",
                server="embedded" if runtime.embedded is not None else "external",
                authenticated=runtime.nats_credentials is not None,
                **({"url": runtime.nats_url} if admin else {}),
            )
            components["stream"] = StreamHealth(
                status="healthy",
                name=runtime.store.stream,
                messages=info.state.messages,
                last_seq=info.state.last_seq,
            )
            storage = await runtime.store.storage()
            # Room again means the stream's and the account's limits would take the refused
            # append and the server takes a write (its own limit is not shown to clients).
            full = storage.refused_bytes is not None and not (
                storage.has_room_for_refused() and await runtime.idempotency.writable()
            )
            components["event_store"] = EventStoreHealth(
                status="full" if full else "ok",
                used_bytes=storage.used_bytes,
                limit_bytes=storage.limit_bytes,
            )
            projections: dict[str, ProjectionLag] = {}
            for projection in runtime.catalogue.projections:
                consumer = await runtime.store.js.consumer_info(
                    runtime.store.stream, consumer_name(projection)
                )
                projections[projection.name] = ProjectionLag(
                    applied_seq=runtime.progress.applied.get(projection.name, 0),
                    lag_events=events_behind(consumer),
                    parked_events=parked.get(projection.name, 0),
                    halted=projection.name in runtime.progress.halted,
                )
            components["projections"] = projections
        except (NatsError, TimeoutError) as error:
            healthy = False
            components["nats"] = NatsHealth(status="unhealthy", error=type(error).__name__)
        disk = psutil.disk_usage(str(runtime.settings.data_dir.resolve()))
        components["system"] = SystemHealth(
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_percent=psutil.virtual_memory().percent,
            disk_percent=disk.percent,
            disk_free_bytes=disk.free,
        )
        set_aside = any(parked.values()) or bool(runtime.progress.halted)
        overall: Overall = (
            "unhealthy" if not healthy else "degraded" if full or set_aside else "healthy"
        )
        body = Health(
            status=overall,
            version=VERSION,
            timestamp=time.time(),
            components=HealthComponents(**components),
        )
        return Response(body, status_code=200 if overall == "healthy" else 503)


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (HealthController,)
