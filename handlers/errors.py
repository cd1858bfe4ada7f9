"""How a refused command is described to a client, whichever edge (HTTP or NATS) it came by."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from domain.base import DomainError, Gone, Invalid, NotFound, StateConflict
from handlers.ports import ConcurrencyConflict, DuplicateAppend, EventTooLarge, StoreFull


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    fields: list[FieldError] = []


class ErrorEnvelope(BaseModel):
    error: ErrorBody


_DOMAIN_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (NotFound, 404),
    (StateConflict, 409),
    (Gone, 410),
    (Invalid, 422),
)


EXPECTED: tuple[type[Exception], ...] = (
    DomainError,
    PydanticValidationError,
    ConcurrencyConflict,
    DuplicateAppend,
    StoreFull,
)

EVENT_STORE_FULL = ErrorBody(
    status=507,
    code="event_store_full",
    message="The event log has no room left: nothing was recorded. Retry once an operator has "
    "freed or added storage (GET /api/v1/health shows the event store's state)",
)


def validation_fields(exc: PydanticValidationError) -> list[FieldError]:
    return [
        FieldError(field=".".join(str(p) for p in err["loc"]), message=err["msg"])
        for err in exc.errors()
    ]


def describe(exc: Exception) -> ErrorBody | None:
    """The client-facing description of an expected refusal; None for anything unexpected."""
    match exc:
        case DomainError():
            status = next((s for kind, s in _DOMAIN_STATUS if isinstance(exc, kind)), 400)
            fields = [FieldError(field=exc.field, message=exc.message)] if exc.field else []
            return ErrorBody(status=status, code=exc.code, message=exc.message, fields=fields)
        case PydanticValidationError():
            return ErrorBody(
                status=422,
                code="validation_error",
                message="The request has invalid fields",
                fields=validation_fields(exc),
            )
        case StoreFull():
            return EVENT_STORE_FULL
        case EventTooLarge():
            return ErrorBody(
                status=413,
                code="event_too_large",
                message="The command's event is larger than the event log takes; "
                "keep free-form fields (metadata, config) small",
            )
        case DuplicateAppend():
            return ErrorBody(status=409, code="duplicate_in_flight", message=str(exc))
        case ConcurrencyConflict():
            return ErrorBody(status=409, code="concurrency_conflict", message=str(exc))
    return None
