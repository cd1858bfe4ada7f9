"""The service's Prometheus instruments, on a registry of its own.

One ``Metrics`` per service process (``api.runtime.Runtime``), never the global default registry:
the tests run many services in one interpreter, and each must count only its own work (and
register its families without a "Duplicated timeseries" clash). The command path, projectors,
timers, webhook courier and uploads count here as they work; what is a state rather than a count
(read-model totals, lag, health, open feeds) is read when ``/metrics`` is scraped
(``api.metrics``) and handed to ``ReadingCollector`` as one ``Reading``.

Labels are bounded: aggregate, command and projection names, refusal codes, slice names, route
templates (never raw paths), and for webhook endpoints a digest of the URL, capped in number.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from handlers.outcome import CommandOutcome

# The labels Litestar's Prometheus middleware gives every HTTP sample, in its order.
HTTP_LABELS = ("method", "path", "status_code", "app_name")
APP_NAME = "jetflow"
# A webhook attempt ends as one of these (``Metrics.webhook_attempt``).
WEBHOOK_OUTCOMES = ("delivered", "retrying", "failed")
TimerCheck = Callable[[datetime], Awaitable[int]]


@dataclass(frozen=True)
class ProjectionReading:
    applied_seq: int
    # Events matching the projection that its consumer has not had acknowledged; None when the
    # consumer could not be asked (no projector runs it, NATS away).
    lag_events: int | None = None
    # Age of the oldest such event (0 when caught up).
    lag_seconds: float | None = None
    # Events parked and not yet resolved (``domain.parking``), and whether this process halted it.
    parked_events: int = 0
    halted: bool = False


@dataclass(frozen=True)
class Reading:
    """What one scrape read from the running service."""

    nats_up: bool
    database_up: bool
    live_feeds: int
    stream_last_seq: int | None = None
    projections: Mapping[str, ProjectionReading] = field(default_factory=dict)
    # Per read model (``tasks``, ``render_jobs``, ``deployments``): rows by status.
    statuses: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # Deliveries due per endpoint (a digest of its URL, the rest summed as ``other``).
    webhook_backlog: Mapping[str, int] = field(default_factory=dict)


STATUS_FAMILIES = {
    "tasks": "Compute tasks by status (tasks read model)",
    "render_jobs": "Render jobs by status (render read model)",
    "deployments": "Deployments by status (deployments read model)",
}


class ReadingCollector:
    """Renders the latest ``Reading``; the scrape sets it just before the registry is rendered,
    with no await in between, so one scrape never shows two readings mixed."""

    def __init__(self) -> None:
        self.reading: Reading | None = None

    def describe(self) -> Iterable[Metric]:
        """The families without samples: names the registry checks for clashes at register."""
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self.reading)

    def _families(self, r: Reading | None) -> list[Metric]:
        nats = GaugeMetricFamily("jetflow_nats_up", "1 when the event stream answered this scrape")
        database = GaugeMetricFamily(
            "jetflow_database_up", "1 when the projection database answered this scrape"
        )
        live = GaugeMetricFamily("jetflow_live_feeds", "Live feeds (SSE, WebSocket) open now")
        last_seq = GaugeMetricFamily("jetflow_stream_last_seq", "Last sequence of the event stream")
        applied = GaugeMetricFamily(
            "jetflow_projection_applied_seq",
            "Last stream sequence a projection applied",
            labels=["projection"],
        )
        lag = GaugeMetricFamily(
            "jetflow_projection_lag_events",
            "Events of a projection's aggregate not yet applied",
            labels=["projection"],
        )
        lag_s = GaugeMetricFamily(
            "jetflow_projection_lag_seconds",
            "Age of the oldest event a projection has not applied (0 when caught up)",
            labels=["projection"],
        )
        parked = GaugeMetricFamily(
            "jetflow_projection_parked_events",
            "Events a projection parked after they failed to apply, not yet retried or skipped",
            labels=["projection"],
        )
        halted = GaugeMetricFamily(
            "jetflow_projection_halted",
            "1 when this process stopped a projection (policy halt) on an event that kept failing",
            labels=["projection"],
        )
        backlog = GaugeMetricFamily(
            "jetflow_webhook_backlog",
            "Webhook deliveries due, per endpoint (first 12 hex digits of the callback URL's "
            "SHA-256; beyond the largest endpoints summed as other)",
            labels=["endpoint"],
        )
        statuses = {
            name: GaugeMetricFamily(f"jetflow_{name}", text, labels=["status"])
            for name, text in STATUS_FAMILIES.items()
        }
        if r is not None:
            nats.add_metric([], float(r.nats_up))
            database.add_metric([], float(r.database_up))
            live.add_metric([], r.live_feeds)
            if r.stream_last_seq is not None:
                last_seq.add_metric([], r.stream_last_seq)
            for name, projection in r.projections.items():
                applied.add_metric([name], projection.applied_seq)
                parked.add_metric([name], projection.parked_events)
                halted.add_metric([name], float(projection.halted))
                if projection.lag_events is not None:
                    lag.add_metric([name], projection.lag_events)
                if projection.lag_seconds is not None:
                    lag_s.add_metric([name], projection.lag_seconds)
            for endpoint, due in r.webhook_backlog.items():
                backlog.add_metric([endpoint], due)
            for name, counts in r.statuses.items():
                for status, count in counts.items():
                    statuses[name].add_metric([status], count)
        return [
            nats,
            database,
            live,
            last_seq,
            applied,
            lag,
            lag_s,
            parked,
            halted,
            backlog,
            *statuses.values(),
        ]


class Metrics:
    """Every instrument of one service process. Recording costs a dict lookup and an add."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # HTTP: filled by Litestar's Prometheus middleware (``api.metrics.HttpMetricsMiddleware``);
        # NATS ``cmd.*`` requests by FastStream's (``jetflow_cmd_*``, made by ``api.runtime``).
        self.http_requests = Counter(
            "jetflow_http_requests", "HTTP requests by route template", HTTP_LABELS, registry=r
        )
        self.http_request_seconds = Histogram(
            "jetflow_http_request_duration_seconds",
            "HTTP request duration by route template, to the last body byte sent",
            HTTP_LABELS,
            registry=r,
        )
        self.http_in_progress = Gauge(
            "jetflow_http_requests_in_progress",
            "HTTP requests being served",
            HTTP_LABELS,
            registry=r,
        )
        self.http_errors = Counter(
            "jetflow_http_requests_error", "HTTP requests answered 5xx", HTTP_LABELS, registry=r
        )
        self.commands = Counter(
            "jetflow_commands",
            "Commands by aggregate, command and outcome (accepted, unchanged, replayed, refused "
            "with its code, conflict when every retry lost)",
            ("aggregate", "command", "outcome", "code"),
            registry=r,
        )
        self.conflict_retries = Counter(
            "jetflow_command_conflict_retries",
            "Commands decided again because another writer appended first",
            ("aggregate",),
            registry=r,
        )
        self.events_appended = Counter(
            "jetflow_events_appended", "Events appended to the stream", ("aggregate",), registry=r
        )
        self.projection_batch_seconds = Histogram(
            "jetflow_projection_batch_seconds",
            "Time to decode and apply one batch of a projection (one SQL transaction)",
            ("projection",),
            registry=r,
        )
        self.timer_checks = Counter(
            "jetflow_timer_checks", "Timer checks run, per slice", ("slice",), registry=r
        )
        self.timers_fired = Counter(
            "jetflow_timers_fired",
            "Commands timer checks sent for what fell due (expired leases, silent nodes, ...)",
            ("slice",),
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "jetflow_webhook_deliveries",
            "Webhook attempts by outcome: delivered, retrying (failed, tried again), failed "
            "(failed for good)",
            ("outcome",),
            registry=r,
        )
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome)
        self.upload_bytes = Counter(
            "jetflow_upload_received_bytes", "Upload bytes received and staged", registry=r
        )
        self.upload_bytes_in_flight = Gauge(
            "jetflow_upload_bytes_in_flight",
            "Bytes of PATCH bodies being received, staged but not yet recorded",
            registry=r,
        )
        self.reading = ReadingCollector()
        r.register(self.reading)

    def command_done(self, aggregate: str, command: str, outcome: CommandOutcome) -> None:
        """A command answered: it appended (``accepted``), needed nothing (``unchanged``) or
        handed back the answer of its first delivery (``replayed``)."""
        if outcome.decided:
            self.commands.labels(aggregate, command, "accepted", "").inc()
            self.events_appended.labels(aggregate).inc(len(outcome.decided))
        elif not outcome.events:
            self.commands.labels(aggregate, command, "unchanged", "").inc()
        else:
            self.commands.labels(aggregate, command, "replayed", "").inc()

    def command_refused(self, aggregate: str, command: str, code: str) -> None:
        self.commands.labels(aggregate, command, "refused", code).inc()

    def command_conflicted(self, aggregate: str, command: str) -> None:
        self.commands.labels(aggregate, command, "conflict", "concurrency_conflict").inc()

    def conflict_retry(self, aggregate: str) -> None:
        self.conflict_retries.labels(aggregate).inc()

    def projection_batch(self, projection: str, seconds: float) -> None:
        self.projection_batch_seconds.labels(projection).observe(seconds)

    def webhook_attempt(self, delivered: bool, will_retry: bool) -> None:
        outcome = "delivered" if delivered else "retrying" if will_retry else "failed"
        self.webhook_deliveries.labels(outcome).inc()

    def upload_received(self, length: int) -> None:
        """Bytes of a chunk staged: received, and in flight until the chunk is settled."""
        self.upload_bytes.inc(length)
        self.upload_bytes_in_flight.inc(length)

    def upload_settled(self, length: int) -> None:
        """A PATCH body is done with (recorded or given up): its bytes are no longer in flight."""
        self.upload_bytes_in_flight.dec(length)

    def counted_timer(self, slice_name: str, check: TimerCheck) -> TimerCheck:
        """``check`` counting its runs and the commands it sent under its slice's name."""
        runs = self.timer_checks.labels(slice_name)
        fired = self.timers_fired.labels(slice_name)

        async def run(now: datetime) -> int:
            runs.inc()
            sent = await check(now)
            fired.inc(sent)
            return sent

        return run
