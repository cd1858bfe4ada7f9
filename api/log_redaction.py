"""Secrets that travel in URLs never reach a log line.

Live-feed clients that cannot set headers pass ``?token=``, and refer keys are path segments of
``/download/<key>``; the access log would otherwise keep both in full. The filter rewrites every
record's message and arguments before any handler formats it.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"
_PATTERNS = (
    (re.compile(r"([?&]token=)[^&\s\"']*"), rf"\1{REDACTED}"),
    (re.compile(r"(/download/)[^/?\s\"']+"), rf"\1{REDACTED}"),
)
# Loggers whose records carry request URLs.
_URL_LOGGERS = ("uvicorn.access", "uvicorn.error", "litestar", "httpx")


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install() -> None:
    """Filter the loggers that see URLs (filters on a logger apply to its own records)."""
    for name in _URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
