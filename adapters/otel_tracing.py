"""OpenTelemetry behind ``adapters.tracing``; imported only when tracing is on (``jetflow[otel]``).

Nothing here touches OpenTelemetry's process-wide state: the tracer provider is this service's
own and is handed to each instrumentation (Litestar's, SQLAlchemy's per engine, httpx's per
client), so two services in one process (the tests) trace independently, and one without tracing
is not traced. The trace context crosses JetStream as a W3C ``traceparent`` message header.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
from litestar.plugins import PluginProtocol
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters import log_context
from adapters.tracing import TRACEPARENT, Attributes, SpanHandle, SpanKind, Tracing

# Only the W3C trace context travels in event headers: baggage could carry anything.
_PROPAGATOR = TraceContextTextMapPropagator()
_KINDS = {
    "internal": trace.SpanKind.INTERNAL,
    "server": trace.SpanKind.SERVER,
    "client": trace.SpanKind.CLIENT,
    "producer": trace.SpanKind.PRODUCER,
    "consumer": trace.SpanKind.CONSUMER,
}


def _exporter(mode: str) -> SpanExporter:
    if mode == "console":
        return ConsoleSpanExporter()
    # Configured by the OTEL_EXPORTER_OTLP_* variables (endpoint, headers, timeout).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class _InsideTraces(trace.Tracer):
    """SQLAlchemy's tracer: a statement is recorded inside a traced operation only (a request,
    a command, a projection batch), else the timers' and the webhook sweep's polling would each
    be a trace of its own every second."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(
        self, name: str, context: Context | None = None, *args: Any, **kwargs: Any
    ) -> Span:
        if not trace.get_current_span(context).get_span_context().is_valid:
            return trace.INVALID_SPAN
        return self._tracer.start_span(name, context, *args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._tracer.start_as_current_span(*args, **kwargs)


def _context_of(traceparent: str) -> tuple[Context, SpanContext] | None:
    context = _PROPAGATOR.extract({TRACEPARENT: traceparent})
    span_context = trace.get_current_span(context).get_span_context()
    return (context, span_context) if span_context.is_valid else None


class OpenTelemetryTracing(Tracing):
    enabled = True

    def __init__(self, provider: TracerProvider, *, owned: bool) -> None:
        self.provider = provider
        self.owned = owned  # made here, so flushed and stopped here
        self.tracer = provider.get_tracer("jetflow")
        self._sql_tracer = _InsideTraces(
            provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
        )

    @classmethod
    def configured(cls, mode: str, provider: TracerProvider | None) -> OpenTelemetryTracing:
        if provider is not None:
            return cls(provider, owned=False)
        service = os.environ.get("OTEL_SERVICE_NAME") or "jetflow"
        made = SdkTracerProvider(resource=Resource.create({"service.name": service}))
        made.add_span_processor(BatchSpanProcessor(_exporter(mode)))
        return cls(made, owned=True)

    def span(
        self,
        name: str,
        attributes: Attributes | None = None,
        *,
        kind: SpanKind = "internal",
        parent: str | None = None,
    ) -> AbstractContextManager[SpanHandle]:
        traced = _context_of(parent) if parent else None
        return self.tracer.start_as_current_span(
            name,
            context=traced[0] if traced else None,
            kind=_KINDS[kind],
            attributes=attributes,
        )

    def inject(self, headers: dict[str, str]) -> None:
        _PROPAGATOR.inject(headers)

    @contextmanager
    def batch(
        self, name: str, traceparents: Sequence[str | None], attributes: Attributes | None = None
    ) -> Iterator[SpanHandle]:
        """One span does the batch's work (its SQL statements are its children), in the trace of
        the batch's first traced event and linked to the others; every other trace in the batch
        gets a span of its own, linked back to it, so each trace shows its event applied."""
        traces: dict[int, tuple[Context, SpanContext]] = {}
        for traceparent in traceparents:
            found = _context_of(traceparent) if traceparent else None
            if found is not None:
                traces.setdefault(found[1].trace_id, found)
        traced = list(traces.values())
        others = traced[1:]
        with self.tracer.start_as_current_span(
            name,
            context=traced[0][0] if traced else None,
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
            links=[Link(span_context) for _, span_context in others],
        ) as span:
            linked = [Link(span.get_span_context())]
            echoes = [
                self.tracer.start_span(
                    name, context, kind=trace.SpanKind.CONSUMER, attributes=attributes, links=linked
                )
                for context, _ in others
            ]
            try:
                yield span
            except Exception as failure:  # recorded on every trace, then raised on
                for echo in echoes:
                    echo.record_exception(failure)
                    echo.set_status(Status(StatusCode.ERROR, type(failure).__name__))
                raise
            finally:
                for echo in echoes:
                    echo.end()

    def http_plugins(self, redact: Callable[[str], str]) -> list[PluginProtocol]:
        def span_details(scope: Any) -> tuple[str, dict[str, Any]]:
            path = redact(str(scope.get("path", "")))
            method = scope.get("method")
            return (f"{method} {path}" if method else path), {}

        def on_request(span: Span, scope: dict[str, Any]) -> None:
            """The URL attributes hold the query (``?token=``) and the path (refer keys)."""
            recorded = dict(span.attributes or {}) if isinstance(span, ReadableSpan) else {}
            for key, value in recorded.items():
                if isinstance(value, str) and (clean := redact(value)) != value:
                    span.set_attribute(key, clean)
            if (request_id := log_context.request_id()) is not None:
                span.set_attribute("jetflow.request_id", request_id)

        config = OpenTelemetryConfig(
            tracer_provider=self.provider,
            meter_provider=NoOpMeterProvider(),
            scope_span_details_extractor=span_details,
            server_request_hook_handler=on_request,
            # A span per ASGI message would be one per event of a live feed.
            exclude_spans=["receive", "send"],
        )
        return [OpenTelemetryPlugin(config)]

    def instrument_engine(self, engine: AsyncEngine) -> None:
        # Per engine: the instrumentor's instrument() patches create_engine process-wide, once.
        connections = NoOpMeterProvider().get_meter(__name__).create_up_down_counter("unused")
        EngineTracer(self._sql_tracer, engine.sync_engine, connections)

    def instrument_client(self, client: httpx.AsyncClient) -> httpx.AsyncClient:
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)
        return client

    def shutdown(self) -> None:
        if self.owned and isinstance(self.provider, SdkTracerProvider):
            self.provider.shutdown()
