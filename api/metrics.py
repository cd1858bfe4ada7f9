"""GET /metrics: this service process's Prometheus metrics, and the middleware counting requests.

Access is the ``metrics`` policy (admins and operators; Prometheus scrapes with a key as a bearer
token). Counts are made where the work happens (``adapters.metrics``); what is a state is read
here when scraped, in as few round trips as it takes: one GROUP BY per read model, two queries on
the webhook backlog, the stream's info and one consumer info per projection (plus one direct get
per projection that is behind, for the age of its oldest unapplied event). A part that does not
answer within ``READ_TIMEOUT_S`` is reported down (``jetflow_nats_up``, ``jetflow_database_up``)
and its figures are left out, so a scrape answers even while NATS or the database is away.

HTTP requests are counted by Litestar's Prometheus middleware, told to count on the service's
registry: as shipped it keeps its instruments in a class attribute on the global default
registry, which every app of a process would share. ``path`` is the route template
(``group_path``), never the raw path, so ids do not become label values.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from litestar import Controller, Response, get
from litestar._asgi.utils import wrap_in_exception_handler
from litestar.middleware import DefineMiddleware
from litestar.plugins.prometheus import PrometheusConfig, PrometheusMiddleware
from litestar.types import ASGIApp
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import Table, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.metrics import APP_NAME, Metrics, ProjectionReading, Reading
from api.dependencies import Live
from api.http import METRICS, Rt
from api.runtime import Runtime
from domain.deployments import DeploymentStatus
from domain.render import RenderStatus
from domain.tasks import TaskStatus
from handlers.parking import parked_counts
from handlers.projector import events_behind, projection_consumer
from projections.base import Projection
from projections.deployments import deployments, webhook_backlog
from projections.render import render_jobs
from projections.tasks import tasks

READ_TIMEOUT_S = 2.0
# Webhook endpoints shown one by one (the largest backlogs); the rest are summed as "other".
TOP_ENDPOINTS = 20
# Read model, its table and every status it can hold (shown at 0 when no row has it).
STATUS_TABLES: tuple[tuple[str, Table, tuple[str, ...]], ...] = (
    ("tasks", tasks, tuple(TaskStatus)),
    ("render_jobs", render_jobs, tuple(RenderStatus)),
    ("deployments", deployments, tuple(DeploymentStatus)),
)
Labels = dict[str, str | int | float]


@dataclass
class HttpMetricsConfig(PrometheusConfig):
    """Litestar's Prometheus configuration, with the instruments to count on."""

    metrics: Metrics = field(kw_only=True)


class HttpMetricsMiddleware(PrometheusMiddleware):
    """Litestar's middleware on the service's own instruments. Mounted outermost, it answers
    refusals raised by the middleware inside it (authentication's 401, the rate limit's 429)
    itself, as Litestar does around every handler, so their status is the one counted
    (``wrap_in_exception_handler`` is what Litestar puts there; private since Litestar 2.9)."""

    def __init__(self, app: ASGIApp, config: HttpMetricsConfig) -> None:
        super().__init__(wrap_in_exception_handler(app), config)
        self._instruments = config.metrics

    def request_count(self, labels: Labels) -> Counter:
        return self._instruments.http_requests

    def request_time(self, labels: Labels) -> Histogram:
        return self._instruments.http_request_seconds

    def requests_in_progress(self, labels: Labels) -> Gauge:
        return self._instruments.http_in_progress

    def requests_error_count(self, labels: Labels) -> Counter:
        return self._instruments.http_errors


def http_metrics(metrics: Metrics) -> DefineMiddleware:
    """The app's outermost middleware: every request, refused or served, counted by route."""
    config = HttpMetricsConfig(
        app_name=APP_NAME,
        prefix="jetflow_http",
        group_path=True,
        middleware_class=HttpMetricsMiddleware,
        metrics=metrics,
    )
    return config.middleware


def endpoint_label(url: str) -> str:
    """A webhook endpoint as a label: a digest, since a callback URL can carry a secret and is
    another user's to know (``printf %s URL | sha256sum`` finds one's own)."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


async def _lag(
    runtime: Runtime, projection: Projection, applied: int
) -> tuple[int | None, float | None]:
    """Events the projection's consumer has not had acknowledged, and the oldest one's age."""
    js, stream = runtime.store.js, runtime.store.stream
    consumer = await projection_consumer(runtime.store, projection)
    if consumer is None:
        return None, None  # no projector has made its consumer yet
    behind = events_behind(consumer)
    if behind == 0:
        return 0, 0.0
    acked = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
    try:
        raw = await js.get_msg(
            stream,
            max(applied, acked or 0) + 1,
            subject=projection.subject_filter,
            direct=True,
            next=True,
        )
    except NotFoundError:
        return behind, 0.0  # applied while we asked
    oldest = runtime.store.codec.decode(raw.seq or 0, raw.data or b"")
    return behind, max(0.0, time.time() - oldest.occurred_at.timestamp())


async def _read_stream(runtime: Runtime) -> tuple[bool, int | None, dict[str, ProjectionReading]]:
    applied = dict(runtime.progress.applied)
    halted = runtime.progress.halted
    projections = runtime.catalogue.projections
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            info = await runtime.store.js.stream_info(runtime.store.stream)
            lags = await asyncio.gather(
                *(_lag(runtime, p, applied.get(p.name, 0)) for p in projections)
            )
    except (NatsError, TimeoutError):
        return (
            False,
            None,
            {
                p.name: ProjectionReading(applied.get(p.name, 0), halted=p.name in halted)
                for p in projections
            },
        )
    readings = {
        p.name: ProjectionReading(applied.get(p.name, 0), events, seconds, halted=p.name in halted)
        for p, (events, seconds) in zip(projections, lags, strict=True)
    }
    return True, int(info.state.last_seq), readings


async def _backlog(session: AsyncSession) -> dict[str, int]:
    due = func.sum(webhook_backlog.c.due)
    waiting = webhook_backlog.c.due > 0
    largest = await session.execute(
        select(webhook_backlog.c.url, due)
        .where(waiting)
        .group_by(webhook_backlog.c.url)
        .order_by(due.desc())
        .limit(TOP_ENDPOINTS)
    )
    backlog: dict[str, int] = {}
    for url, count in largest.all():
        label = endpoint_label(url)
        backlog[label] = backlog.get(label, 0) + int(count)
    rest = int(await session.scalar(select(due).where(waiting)) or 0) - sum(backlog.values())
    if rest > 0:
        backlog["other"] = rest
    return backlog


async def _read_database(
    runtime: Runtime,
) -> tuple[bool, dict[str, Mapping[str, int]], dict[str, int], dict[str, int]]:
    statuses: dict[str, Mapping[str, int]] = {}
    try:
        async with asyncio.timeout(READ_TIMEOUT_S), runtime.sessions() as session:
            for name, table, known in STATUS_TABLES:
                counts = dict.fromkeys(known, 0)
                rows = await session.execute(
                    select(table.c.status, func.count()).group_by(table.c.status)
                )
                counts.update({status: int(count) for status, count in rows.all()})
                statuses[name] = counts
            backlog = await _backlog(session)
            parked = await parked_counts(session)
    except (SQLAlchemyError, TimeoutError):
        return False, {}, {}, {}
    return True, statuses, backlog, parked


async def read(runtime: Runtime, live_feeds: int) -> Reading:
    """What a scrape shows besides the counts: health, lag, read-model totals, backlog."""
    (nats_up, last_seq, readings), (database_up, statuses, backlog, parked) = await asyncio.gather(
        _read_stream(runtime), _read_database(runtime)
    )
    projections = {n: replace(r, parked_events=parked.get(n, 0)) for n, r in readings.items()}
    return Reading(
        nats_up=nats_up,
        database_up=database_up,
        live_feeds=live_feeds,
        stream_last_seq=last_seq,
        projections=projections,
        statuses=statuses,
        webhook_backlog=backlog,
    )


class MetricsController(Controller):
    path = "/metrics"
    tags = ["system"]

    @get(
        "/",
        opt=METRICS,
        summary="Prometheus metrics of this service process (text format 0.0.4)",
        media_type=CONTENT_TYPE_PLAIN_0_0_4,
    )
    async def scrape(self, runtime: Rt, live: Live) -> Response[bytes]:
        metrics = runtime.metrics
        metrics.reading.reading = await read(runtime, live.slots.open_feeds)
        # No await from here on: the registry renders exactly the reading just taken.
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
