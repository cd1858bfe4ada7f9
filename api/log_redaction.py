"""Secrets never reach a log line or a trace: the one rule of what is taken out.

Live-feed clients that cannot set headers pass ``?token=``, and refer keys are path segments of
``/download/<key>``; the access log (and the HTTP span's URL) would otherwise keep both in full.
Besides those, anything shaped like an API key's secret (``jfk_<id>_<secret>``: the id stays, to
tell keys apart), a JWT or a bearer credential is taken out wherever it appears. ``api.logs``
applies this to every formatted line, ``adapters.otel_tracing`` to the HTTP span's URL.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"
_PATTERNS = (
    (re.compile(r"([?&]token=)[^&\s\"']*"), rf"\1{REDACTED}"),
    (re.compile(r"(/download/)[^/?\s\"']+"), rf"\1{REDACTED}"),
    (re.compile(r"(jfk_[0-9A-Za-z]+_)[A-Za-z0-9_-]+"), rf"\1{REDACTED}"),
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), rf"\1{REDACTED}"),
)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
