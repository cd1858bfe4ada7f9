"""The render seed's envelopes: success is ``{"code", "message", "data"}``, and a refusal carries
the seed's numeric code with ``message``, ``detail`` and ``errors`` beside jetflow's own
``error`` object, so clients of either convention read it.

What a refusal says is ``api.errors.refusal``'s, as on every other route; this module only
renders it the seed's way. The seed adds two things of its own to a body that fails validation
in the handler: a missing field has its own code (1001), and a refused value is echoed.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from litestar import Controller, MediaType, Request, Response
from litestar.openapi import ResponseSpec
from pydantic import Field
from pydantic import ValidationError as PydanticValidationError

from api.answers import Answer
from api.errors import REFUSED, refusal
from api.http import SEQ_HEADER
from handlers.errors import ErrorBody
from handlers.outcome import CommandOutcome

SEED_CODES = {
    "malformed_json": 1000,
    "bad_request": 1000,
    "missing_field": 1001,
    "validation_error": 1002,
    "not_found": 2000,
    "frame_not_found": 2000,
    "scene_analysis_not_found": 2000,
    "no_matching_hardware_config": 2000,
    "render_job_not_found": 2001,
    "render_job_exists": 3001,
    "forbidden": 4000,
    "unauthorized": 4000,
    "rate_limited": 4000,
    "auth_failures_exceeded": 4000,
    "internal_error": 5000,
}
SEED_MESSAGES = {
    1000: "Parameter error",
    1001: "Required field missing",
    1002: "Field format error",
    2000: "Resource not found",
    2001: "Task not found",
    3000: "Resource conflict",
    3001: "Task already exists",
    4000: "Permission denied",
    5000: "Internal error",
}
T = TypeVar("T")


def seed_code(body: ErrorBody) -> int:
    if body.code in SEED_CODES:
        return SEED_CODES[body.code]
    if body.status == 409:
        return 3000
    if body.status in (400, 422):
        return 1002
    if body.status == 404:
        return 2000
    return 5000


class SeedEnvelope(Answer, Generic[T]):
    code: int
    message: str
    data: T


class SeedFieldError(Answer):
    field: str
    message: str
    value: bool | int | float | str | None = Field(
        default=None, description="the refused value, when a string or a number (else absent)"
    )


class SeedError(Answer):
    code: int
    message: str
    detail: str
    errors: list[SeedFieldError]
    error: ErrorBody


def seed_error(
    body: ErrorBody,
    headers: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
) -> Response[dict[str, Any]]:
    code = seed_code(body)
    status = 400 if body.status == 422 else body.status
    errors = [
        SeedFieldError(field=f.field, message=f.message, value=values[f.field])
        if values and f.field in values
        else SeedFieldError(field=f.field, message=f.message)
        for f in body.fields
    ]
    answer = SeedError(
        code=code,
        message=SEED_MESSAGES.get(code, body.message),
        detail=body.message
        if not body.fields
        else "; ".join(f"{f.field}: {f.message}" for f in body.fields),
        errors=errors,
        # Every field given, so that only an unechoed ``value`` is left out as unset.
        error=ErrorBody(status=status, code=body.code, message=body.message, fields=body.fields),
    )
    return Response(
        answer.model_dump(exclude_unset=True),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _seed_refusal(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    body, headers = refusal(request, exc)
    if not isinstance(exc, PydanticValidationError):
        return seed_error(body, headers)
    errors = exc.errors()
    if any(err["type"] == "missing" for err in errors):
        body = body.model_copy(update={"code": "missing_field"})
    values = {
        ".".join(str(p) for p in err["loc"]): err["input"]
        for err in errors
        if isinstance(err.get("input"), (str, int, float))
    }
    return seed_error(body, headers, values)


SEED_HANDLERS: dict[type[Exception], Any] = dict.fromkeys(REFUSED, _seed_refusal)


def _refusal(description: str) -> ResponseSpec:
    return ResponseSpec(SeedError, description=description, generate_examples=False)


# The seed refusals a route documents: every route's, and a write's (a state that refuses it).
READ_REFUSALS = {
    400: _refusal("Invalid input: seed code 1000 (malformed), 1001 (missing) or 1002 (format)"),
    401: _refusal("No credentials, or unknown, revoked or expired ones (seed code 4000)"),
    403: _refusal("The caller's role may not use this route (seed code 4000)"),
    404: _refusal("Not found, or owned by another user (seed code 2000 or 2001)"),
    429: _refusal("Rate limit reached (seed code 4000; see the X-RateLimit-* headers)"),
}
WRITE_REFUSALS = {
    **READ_REFUSALS,
    409: _refusal("The job or frame is not in a state that allows it (seed code 3000 or 3001)"),
}


class SeedController(Controller):
    """A render controller: its refusals are rendered in the seed's envelope."""

    path = "/"
    tags = ["render"]
    exception_handlers = SEED_HANDLERS


def ok(
    data: T, message: str = "OK", status: int = 200, seq: int | None = None
) -> Response[SeedEnvelope[T]]:
    headers = {SEQ_HEADER: str(seq)} if seq is not None else None
    return Response(
        SeedEnvelope(code=status, message=message, data=data),
        status_code=status,
        headers=headers,
    )


def written(
    outcome: CommandOutcome, data: T, message: str, status: int = 202
) -> Response[SeedEnvelope[T]]:
    """The seed's answer to a write; ``data`` carries the write's ``seq`` as the header does."""
    return ok(data, message, status, outcome.last_seq)
