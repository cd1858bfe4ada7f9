"""The HTTP side of the error envelope: every refusal answers one JSON shape, never a traceback.

Shape: ``{"error": {"status": 409, "code": "task_not_pending", "message": "..", "fields": []}}``.
Codes are stable; unexpected failures answer 500 ``internal_error`` and are logged server-side.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from nats.errors import Error as NatsError
from pydantic import ValidationError as PydanticValidationError

from domain.base import DomainError
from handlers.errors import ErrorBody, ErrorEnvelope, FieldError, describe
from handlers.ports import ConcurrencyConflict, DuplicateAppend

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


def error_response(
    body: ErrorBody, headers: dict[str, str] | None = None
) -> Response[dict[str, Any]]:
    return Response(
        ErrorEnvelope(error=body).model_dump(),
        status_code=body.status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _malformed_json() -> Response[dict[str, Any]]:
    return error_response(
        ErrorBody(status=400, code="malformed_json", message="The request body is not valid JSON")
    )


def _described(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    body = describe(exc)
    if body is None:
        raise TypeError(f"no description for {type(exc).__name__}") from exc
    return error_response(body)


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[dict[str, Any]]:
    return error_response(exc.body, exc.headers)


def _litestar_validation(
    _: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    fields = [
        FieldError(field=str(item.get("key") or item.get("source") or ""), message=item["message"])
        for item in extra
        if isinstance(item, dict) and "message" in item
    ]
    return error_response(
        ErrorBody(
            status=400 if not fields else 422,
            code="validation_error",
            message=str(exc.detail) if not fields else "The request has invalid fields",
            fields=fields,
        )
    )


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    if isinstance(exc.__cause__, SerializationException):
        return _malformed_json()
    code = http_error_code(exc.status_code)
    return error_response(
        ErrorBody(status=exc.status_code, code=code, message=str(exc.detail)), exc.headers
    )


BROKER_UNAVAILABLE = ErrorBody(
    status=503,
    code="broker_unavailable",
    message="The event store is unavailable for a moment (NATS reconnecting or electing a "
    "leader); nothing was recorded unless a resend with the same Idempotency-Key says so",
)


def _broker_unavailable(request: Request[Any, Any, Any], exc: NatsError) -> Response[Any]:
    """A broker outage is expected in a cluster: answered 503, logged without a traceback."""
    log.warning("%s %s: NATS unavailable: %r", request.method, request.url.path, exc)
    return error_response(BROKER_UNAVAILABLE, {"Retry-After": "1"})


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ErrorBody(status=500, code="internal_error", message="Internal error"))


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    DomainError: _described,
    PydanticValidationError: _described,
    ConcurrencyConflict: _described,
    DuplicateAppend: _described,
    ApiError: _api_error,
    ValidationException: _litestar_validation,
    HTTPException: _http_error,
    NatsError: _broker_unavailable,
    Exception: _unexpected,
}
