"""`jetflow serve`'s log: one JSON object per line for machines, or plain lines on a terminal.

Every line, whichever logger wrote it (uvicorn's access log included), carries the fields the
request or block it was logged in is about (``adapters.log_context``: request id, actor,
aggregate, sequence, projection, webhook) and is passed through ``api.log_redaction`` once it is
formatted, so no message, argument, field or traceback can carry a token or refer key out.

Each HTTP request and WebSocket gets a request id (``in_request``): a sane ``X-Request-Id`` sent
by the client (a proxy's, say) is kept, anything else is replaced by a fresh one; the answer
echoes it in ``X-Request-Id``, and the request's trace span records it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from adapters import log_context
from api.log_redaction import redact

REQUEST_ID_HEADER = "x-request-id"
# Long enough for a UUID, a ULID or a proxy's trace id; nothing that could break a log line.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ACCESS_LOGGER = "uvicorn.access"

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def _context_and_access_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = dict(log_context.current())
    if record.name == _ACCESS_LOGGER and isinstance(record.args, tuple) and len(record.args) == 5:
        # uvicorn's access line: client address, method, path with query, HTTP version, status.
        client, method, path, _, status = record.args
        fields.update(client=client, method=method, path=path, status=status)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context's fields, and the
    exception's traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_context_and_access_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # Each value before encoding: a redaction cannot break the JSON around it.
        clean = {k: redact(v) if isinstance(v, str) else v for k, v in line.items()}
        return json.dumps(clean, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """The line a person reads, with the context's fields after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = log_context.current()
        if fields:
            line += " [" + " ".join(f"{key}={value}" for key, value in fields.items()) + "]"
        return redact(line)


def formatter(log_format: str, stream: Any) -> logging.Formatter:
    """``auto``: plain lines for a person at a terminal, JSON for whatever else reads them."""
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    return ConsoleFormatter() if log_format == "console" else JsonFormatter()


def configure(log_format: str) -> None:
    """Send every logger's lines to stderr through one handler in the chosen format; uvicorn's
    loggers too (the server is then given ``log_config=None``, so that they propagate here)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, sys.stderr))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # a warning is a line like any other, not raw stderr


def _request_id(scope: Any) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            presented = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(presented):
                return presented
            break
    return uuid.uuid4().hex


async def in_request(app: ASGIApp, scope: Any, receive: Any, send: Any) -> None:
    """Run ``app`` on one HTTP request or WebSocket with its request id bound for the log and
    echoed in the answer's headers."""
    if scope["type"] not in ("http", "websocket"):
        await app(scope, receive, send)
        return
    request_id = _request_id(scope)
    echoed = (REQUEST_ID_HEADER.encode(), request_id.encode())

    async def send_with_id(message: Any) -> None:
        if message["type"] in ("http.response.start", "websocket.accept"):
            message = {**message, "headers": [*message.get("headers", ()), echoed]}
        await send(message)

    with log_context.request(request_id):
        await app(scope, receive, send_with_id)
