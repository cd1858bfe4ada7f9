"""Traces of the service, or nothing at all: the port the command path, the event store, the
projectors and the webhook courier call.

OpenTelemetry is an optional extra (``jetflow[otel]``). This module never imports it: tracing
off is ``NO_TRACING``, whose every hook is a method call that does nothing (no span, no header,
no import), so the benchmarked command path pays nothing for it. Only ``configure`` with tracing
on imports ``adapters.otel_tracing``, and a missing extra is a clear refusal there, at start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import httpx
    from litestar.plugins import PluginProtocol
    from opentelemetry.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

# What `JETFLOW_TRACING` may say: where finished spans go.
MODES = ("off", "console", "otlp")
# The W3C Trace Context header an appended event's message carries (never its payload).
TRACEPARENT = "traceparent"

Attributes = Mapping[str, str | int | bool]
SpanKind = Literal["internal", "server", "client", "producer", "consumer"]


class TracingUnavailable(RuntimeError):
    """Tracing was asked for but the otel extra is not installed."""


class SpanHandle(Protocol):
    """The part of a span the callers use: facts learnt once it has begun (a sequence)."""

    def set_attribute(self, key: str, value: str | int | bool) -> object: ...


class _NoSpan:
    """Stands for a span when tracing is off: entering, leaving and attributes cost nothing."""

    def set_attribute(self, key: str, value: str | int | bool) -> None:
        return None

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        return None


_NO_SPAN = _NoSpan()


class Tracing:
    """Tracing switched off. ``adapters.otel_tracing.OpenTelemetryTracing`` overrides each hook."""

    enabled = False

    def span(
        self,
        name: str,
        attributes: Attributes | None = None,
        *,
        kind: SpanKind = "internal",
        parent: str | None = None,
    ) -> AbstractContextManager[SpanHandle]:
        """A span around a block, current inside it; a child of ``parent`` (a traceparent, the
        context an event was appended in) when given, else of the current span."""
        return _NO_SPAN

    def inject(self, headers: dict[str, str]) -> None:
        """Add the current span's ``traceparent`` to a message's headers (none without a span)."""

    def batch(
        self, name: str, traceparents: Sequence[str | None], attributes: Attributes | None = None
    ) -> AbstractContextManager[SpanHandle]:
        """A span around work on a batch of events that may come from several traces."""
        return _NO_SPAN

    def http_plugins(self, redact: Callable[[str], str]) -> list[PluginProtocol]:
        """Litestar plugins that open the HTTP server span of every request; ``redact`` takes
        the secrets out of what it records of the URL (``?token=``, refer keys)."""
        return []

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """Record a span for every SQL statement of ``engine``."""

    def instrument_client(self, client: httpx.AsyncClient) -> httpx.AsyncClient:
        """Record a span for every request ``client`` sends (and propagate the trace)."""
        return client

    def shutdown(self) -> None:
        """Flush and stop the exporters this tracing started."""


NO_TRACING = Tracing()


def configure(mode: str, provider: TracerProvider | None = None) -> Tracing:
    """The tracing of one service process.

    ``provider`` is an embedding program's own (the tests' in-memory exporter) and wins over the
    mode; it stays the embedder's to shut down. Otherwise ``console`` prints spans to stdout and
    ``otlp`` sends them to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (OTLP over HTTP).
    """
    if provider is None and mode == "off":
        return NO_TRACING
    try:
        from adapters.otel_tracing import OpenTelemetryTracing

        return OpenTelemetryTracing.configured(mode, provider)
    except ImportError as missing:
        raise TracingUnavailable(
            f"JETFLOW_TRACING={mode} needs the otel extra (pip install 'jetflow[otel]'); "
            f"{missing.name or missing} is not installed"
        ) from None
