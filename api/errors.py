"""The HTTP side of the error envelope: every refusal answers one JSON shape, never a traceback.

Shape: ``{"error": {"status": 409, "code": "task_not_pending", "message": "..", "fields": []}}``.
Codes are stable; unexpected failures answer 500 ``internal_error`` and are logged server-side.
What an exception tells the client is decided once, by ``refusal``; an envelope (this one, or
the render seed's) only renders it.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from nats.errors import Error as NatsError

from handlers.errors import (
    EVENT_STORE_FULL,
    EXPECTED,
    ErrorBody,
    ErrorEnvelope,
    FieldError,
    describe,
)
from handlers.ports import StoreFull

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def http_error_code(status: int) -> str:
    return _HTTP_CODES.get(status, "http_error")


class ApiError(Exception):
    """A refusal decided at the HTTP edge rather than by the domain."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.body = ErrorBody(status=status, code=code, message=message)
        self.headers = headers or {}


class Refusal(NamedTuple):
    """What a client is told of a failure: the error body and the headers that go with it."""

    body: ErrorBody
    headers: dict[str, str] | None = None


MALFORMED_JSON = ErrorBody(
    status=400, code="malformed_json", message="The request body is not valid JSON"
)
TOO_DEEP = ErrorBody(
    status=400, code="json_too_deep", message="The request body nests deeper than any body needs"
)
BROKER_UNAVAILABLE = ErrorBody(
    status=503,
    code="broker_unavailable",
    message="The event store is unavailable for a moment (NATS reconnecting or electing a "
    "leader); nothing was recorded unless a resend with the same Idempotency-Key says so",
)
INTERNAL_ERROR = ErrorBody(status=500, code="internal_error", message="Internal error")
# The failures ``refusal`` describes as the client's or the moment's; anything else is a bug.
REFUSED: tuple[type[Exception], ...] = (*EXPECTED, ApiError, HTTPException, NatsError)


def _litestar_validation(exc: ValidationException) -> ErrorBody:
    extra = exc.extra if isinstance(exc.extra, list) else []
    fields = [
        FieldError(field=str(item.get("key") or item.get("source") or ""), message=item["message"])
        for item in extra
        if isinstance(item, dict) and "message" in item
    ]
    return ErrorBody(
        status=400 if not fields else 422,
        code="validation_error",
        message=str(exc.detail) if not fields else "The request has invalid fields",
        fields=fields,
    )


def refusal(request: Request[Any, Any, Any], exc: Exception) -> Refusal:
    """What ``exc`` tells the client, whichever envelope renders it. A broker outage is
    expected in a cluster and a full event store is the operator's to fix (each logged in one
    line, without a traceback); an unexpected failure is logged whole and told only as
    ``internal_error``."""
    match exc:
        case ApiError():
            return Refusal(exc.body, exc.headers)
        case ValidationException():
            return Refusal(_litestar_validation(exc))
        case HTTPException() if isinstance(exc.__cause__, SerializationException):
            return Refusal(MALFORMED_JSON)
        case HTTPException():
            code = http_error_code(exc.status_code)
            body = ErrorBody(status=exc.status_code, code=code, message=str(exc.detail))
            return Refusal(body, exc.headers)
        case RecursionError():  # a body nested deeper than the decoder's stack
            return Refusal(TOO_DEEP)
        case StoreFull():
            log.warning("%s %s: the event store is full: %s", request.method, request.url.path, exc)
            return Refusal(EVENT_STORE_FULL)
        case NatsError():
            log.warning("%s %s: NATS unavailable: %r", request.method, request.url.path, exc)
            return Refusal(BROKER_UNAVAILABLE, {"Retry-After": "1"})
    if (body := describe(exc)) is not None:
        return Refusal(body)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Refusal(INTERNAL_ERROR)


def error_response(
    body: ErrorBody, headers: dict[str, str] | None = None
) -> Response[dict[str, Any]]:
    return Response(
        ErrorEnvelope(error=body).model_dump(),
        status_code=body.status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _enveloped(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    return error_response(*refusal(request, exc))


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {Exception: _enveloped}
