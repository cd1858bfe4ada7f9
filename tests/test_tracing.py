"""Traces (issue 17): one trace from the HTTP request through the command, the JetStream append
(its context in the message's ``traceparent`` header), the projection and the webhook delivery,
exported to an in-memory exporter by a service served over real HTTP.

The tracer provider is the service's own (``Settings.tracer_provider``), never OpenTelemetry's
global one, so the other services of this pytest process are not traced.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from adapters.nats_server import EmbeddedNatsServer
from adapters.tracing import NO_TRACING
from api.settings import Settings
from handlers.projector import Parking, start_projection
from projections.tasks import TASKS
from tests.conftest import Service, delete_stream, free_port
from tests.faults.harness import ServeProcess, service_env
from tests.security.receivers import Receiver

ServiceFactory = Callable[..., Awaitable[Service]]
REPO = Path(__file__).resolve().parents[1]
SQL_SCOPE = "opentelemetry.instrumentation.sqlalchemy"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """Spans are exported as they end (no batching), so a test can look at them at once."""
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(exporter))
    yield made
    made.shutdown()


async def spans_until(
    exporter: InMemorySpanExporter, found: Callable[[list[ReadableSpan]], bool]
) -> list[ReadableSpan]:
    for _ in range(100):
        spans = list(exporter.get_finished_spans())
        if found(spans):
            return spans
        await asyncio.sleep(0.05)
    names = sorted({s.name for s in exporter.get_finished_spans()})
    raise AssertionError(f"the spans never got there; finished: {names}")


def named(spans: list[ReadableSpan], name: str, trace_id: int | None = None) -> list[ReadableSpan]:
    return [
        s
        for s in spans
        if s.name == name
        and (trace_id is None or (s.context is not None and s.context.trace_id == trace_id))
    ]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def everything_recorded(spans: list[ReadableSpan]) -> str:
    """Every name and string attribute of every span, to look for secrets in."""
    texts = [s.name for s in spans]
    texts += [str(v) for s in spans for v in (s.attributes or {}).values()]
    return "\n".join(texts)


async def test_one_trace_runs_from_the_post_to_the_read_model_and_the_webhook(
    service_factory: ServiceFactory, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    receiver = await Receiver().start()
    try:
        service = await service_factory(tracer_provider=provider)
        exporter.clear()
        submitted = await service.http.post(
            "/tasks", json={"code": "print(1)", "callback_url": receiver.url()}
        )
        assert submitted.status_code == 202, submitted.text
        task_id, seq = submitted.json()["task_id"], submitted.json()["seq"]
        read = await service.http.get(f"/tasks/{task_id}", params={"wait_for_seq": seq})
        assert read.status_code == 200, read.text

        def delivered(spans: list[ReadableSpan]) -> bool:
            return bool(named(spans, "webhook deliver")) and bool(named(spans, "projection tasks"))

        spans = await spans_until(exporter, delivered)
    finally:
        await receiver.stop()

    [server] = [s for s in named(spans, "POST /api/v1/tasks") if s.kind is SpanKind.SERVER]
    assert server.context is not None
    trace_id = server.context.trace_id
    assert server.attributes is not None
    assert server.attributes["jetflow.request_id"] == submitted.headers["X-Request-Id"]

    [command] = named(spans, "task SubmitTask", trace_id)
    assert parent_of(command) == span_id(server)
    assert command.attributes is not None
    assert command.attributes["jetflow.aggregate_id"] == task_id
    assert command.attributes["jetflow.actor"] == "user:admin"
    assert command.attributes["jetflow.seq"] == seq

    [append] = [
        s for s in named(spans, "jetstream append", trace_id) if parent_of(s) == span_id(command)
    ]
    assert append.kind is SpanKind.PRODUCER
    assert append.attributes is not None and append.attributes["jetflow.seq"] == seq

    # The stored message carries the append's context in a header, and the event is unchanged.
    raw = await service.runtime.store.js.get_msg(service.runtime.store.stream, seq, direct=True)
    assert raw.headers is not None
    version, traced, parent, _flags = raw.headers["traceparent"].split("-")
    assert (version, traced, parent) == ("00", f"{trace_id:032x}", f"{span_id(append):016x}")
    # Beside the concurrency guard, which it leaves as it was.
    assert raw.headers["Nats-Expected-Last-Subject-Sequence"] == "0"
    assert raw.headers["Nats-Expected-Last-Subject-Sequence-Subject"] == f"ev.task.{task_id}.*"
    assert set(json.loads(raw.data or b"{}")) == {
        "event_id",
        "type",
        "schema_version",
        "aggregate",
        "aggregate_id",
        "occurred_at",
        "actor",
        "correlation_id",
        "causation_id",
        "payload",
    }

    [projection] = named(spans, "projection tasks", trace_id)
    assert parent_of(projection) == span_id(append)
    assert projection.kind is SpanKind.CONSUMER
    sql = [
        s for s in spans if s.instrumentation_scope and s.instrumentation_scope.name == SQL_SCOPE
    ]
    assert [s for s in sql if parent_of(s) == span_id(projection)], "no SQL under the apply"

    # The webhook: scheduled and delivered in the same trace, the POST under the delivery.
    [schedule] = named(spans, "webhook schedule", trace_id)
    assert parent_of(schedule) == span_id(append)
    assert named(spans, "webhook ScheduleWebhook", trace_id)
    [deliver] = named(spans, "webhook deliver", trace_id)
    assert parent_of(deliver) == span_id(append)
    [post] = [s for s in spans if s.kind is SpanKind.CLIENT and parent_of(s) == span_id(deliver)]
    assert post.context is not None and post.context.trace_id == trace_id
    assert named(spans, "webhook RecordWebhookAttempt", trace_id)
    assert receiver.requests[0].headers["traceparent"].split("-")[1] == f"{trace_id:032x}"


async def test_a_batch_of_several_traces_is_applied_once_and_shown_in_each(
    service_factory: ServiceFactory, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    service = await service_factory(tracer_provider=provider, projectors=False)
    traces = []
    for n in range(3):
        submitted = await service.http.post("/tasks", json={"code": f"print({n})"})
        assert submitted.status_code == 202, submitted.text
        traces.append(submitted.json()["seq"])
    spans = list(exporter.get_finished_spans())
    trace_of = {
        s.attributes["jetflow.seq"]: s.context.trace_id
        for s in named(spans, "task SubmitTask")
        if s.attributes and s.context and s.attributes["jetflow.seq"] in traces
    }
    assert len(set(trace_of.values())) == 3
    exporter.clear()

    # Every event is in the stream before the projector starts: one fetch takes all three.
    rt = service.runtime
    projector = await start_projection(
        rt.store,
        TASKS,
        rt.sessions,
        rt.progress,
        metrics=rt.metrics,
        parking=Parking(rt.commands),
        tracing=rt.tracing,
    )
    try:
        spans = await spans_until(exporter, lambda s: len(named(s, "projection tasks")) == 3)
    finally:
        projector.cancel()
        with pytest.raises(asyncio.CancelledError):
            await projector
    applied = named(spans, "projection tasks")
    assert {s.context.trace_id for s in applied if s.context} == set(trace_of.values())
    [batch] = [
        s
        for s in applied
        if s.attributes and s.attributes["jetflow.first_seq"] == traces[0] and len(s.links) == 2
    ]
    assert batch.context is not None and batch.context.trace_id == trace_of[traces[0]]
    assert {link.context.trace_id for link in batch.links} == {
        trace_of[traces[1]],
        trace_of[traces[2]],
    }
    for echo in applied:
        if echo is not batch:
            assert [link.context.span_id for link in echo.links] == [span_id(batch)]
    sql = [
        s for s in spans if s.instrumentation_scope and s.instrumentation_scope.name == SQL_SCOPE
    ]
    assert [s for s in sql if parent_of(s) == span_id(batch)], "no SQL under the batch"
    echoes = {span_id(s) for s in applied if s is not batch}
    assert not [s for s in sql if parent_of(s) in echoes], "the batch's SQL ran once, under it"


async def test_no_secret_of_a_url_reaches_a_span(
    service_factory: ServiceFactory, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    service = await service_factory(tracer_provider=provider)
    token = await service.key("viewer", "vera")
    refer_key = "rk" + "q" * 30
    exporter.clear()
    downloaded = await service.http.get(f"/download/{refer_key}")
    assert downloaded.status_code in (404, 410), downloaded.text
    async with service.http.stream(
        "GET", "/events/stream", params={"token": token}, headers={"X-API-Key": ""}
    ) as feed:
        assert feed.status_code == 200
    spans = await spans_until(
        exporter, lambda s: any(x.kind is SpanKind.SERVER and "stream" in x.name for x in s)
    )
    recorded = everything_recorded(spans)
    assert "/api/v1/download/[redacted]" in recorded
    assert "token=[redacted]" in recorded
    assert refer_key not in recorded
    assert token.split("_", 2)[2] not in recorded


@pytest.mark.shared_stack
async def test_without_tracing_no_event_carries_a_trace_header(service: Service) -> None:
    assert service.runtime.tracing is NO_TRACING
    submitted = await service.http.post("/tasks", json={"code": "print(1)"})
    assert submitted.status_code == 202, submitted.text
    seq = submitted.json()["seq"]
    raw = await service.runtime.store.js.get_msg(service.runtime.store.stream, seq, direct=True)
    assert "traceparent" not in (raw.headers or {})
    assert (await service.runtime.store.get(seq)).traceparent is None


def test_tracing_is_off_unless_configured_and_refuses_an_unknown_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "JETFLOW_TRACING",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    assert Settings.from_env().tracing == "off"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert Settings.from_env().tracing == "otlp"
    monkeypatch.setenv("JETFLOW_TRACING", "off")
    assert Settings.from_env().tracing == "off"
    monkeypatch.setenv("JETFLOW_TRACING", "jaeger")
    with pytest.raises(ValueError, match="JETFLOW_TRACING must be one of off, console, otlp"):
        Settings.from_env()


# `jetflow serve` in an interpreter where the otel extra cannot be imported.
WITHOUT_OTEL = (
    "import sys; sys.modules['opentelemetry'] = None; "
    "from cli.main import main; sys.exit(main(['serve']))"
)


async def test_the_service_runs_without_the_otel_extra(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    stream = f"N{uuid.uuid4().hex[:10].upper()}"
    env = service_env(nats_server.url, stream, tmp_path, free_port())
    serve = ServeProcess(env, tmp_path / "serve.log", (sys.executable, "-c", WITHOUT_OTEL))
    try:
        await serve.start()  # healthy: /health answered 200
    finally:
        stopped = await serve.stop()
        await serve.reap()
        await delete_stream(Settings(stream=stream), nats_server.url)
    assert stopped == 0, serve.log_tail()
    assert "Traceback" not in serve.log_path.read_text()


def test_tracing_without_the_otel_extra_is_refused_at_start(tmp_path: Path) -> None:
    """The service says what to install, and starts nothing (no nats-server, no lock)."""
    served = subprocess.run(
        [sys.executable, "-c", WITHOUT_OTEL],
        env={**os.environ, "JETFLOW_TRACING": "otlp", "JETFLOW_DATA_DIR": str(tmp_path)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 1, served.stderr
    assert (
        "JETFLOW_TRACING=otlp needs the otel extra (pip install 'jetflow[otel]')" in served.stderr
    )
    assert "Traceback" not in served.stderr
    assert not (tmp_path / "nats").exists()


async def test_jetflow_serve_sends_its_spans_over_otlp(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    """The real-use path: `jetflow serve` configured by the standard OTLP variables only."""
    collector = await Receiver().start()
    stream = f"O{uuid.uuid4().hex[:10].upper()}"
    env = service_env(
        nats_server.url,
        stream,
        tmp_path,
        free_port(),
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
    )
    serve = ServeProcess(env, tmp_path / "serve.log")
    try:
        await serve.start()  # its health checks are requests, each a server span
    finally:
        stopped = await serve.stop()  # flushes what is still unexported
        await serve.reap()
        await collector.stop()
        await delete_stream(Settings(stream=stream), nats_server.url)
    assert stopped == 0, serve.log_tail()
    assert collector.requests, serve.log_tail()
    assert {r.headers["content-type"] for r in collector.requests} == {"application/x-protobuf"}
    exported = b"".join(r.body for r in collector.requests)
    assert b"GET /api/v1/health" in exported and b"jetflow" in exported
