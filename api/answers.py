"""What routes answer: the base of every response body, and the answer of every write."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from litestar import Response
from litestar.status_codes import HTTP_202_ACCEPTED
from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from adapters.sql import as_utc
from api.http import SEQ_HEADER
from handlers.outcome import CommandOutcome


class AnswerMismatch(TypeError):
    """An answer that does not fit its own model: the service's fault, never the caller's."""


class Answer(BaseModel):
    """A response body. Built from keyword arguments or from a row's attributes; a field it does
    not declare is a bug, as is a value of the wrong type. Either fails as ``AnswerMismatch`` (a
    500, logged) and not as a ``ValidationError``, which the error envelope would answer as the
    request's 422."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    @model_validator(mode="wrap")
    @classmethod
    def _mismatch_is_ours(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        try:
            return handler(data)
        except ValidationError as error:
            raise AnswerMismatch(f"{cls.__name__}: {error}") from None


class Sparse(Answer):
    """An answer that leaves out, rather than nulls, the fields it was not given: the seed's
    shapes omit what a check could not learn (a health report without NATS has no stream)."""

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        given = self.model_fields_set
        return {name: value for name, value in handler(self).items() if name in given}


def _iso_utc(value: datetime) -> str:
    return as_utc(value).isoformat()


# A moment in an answer: ISO 8601 with its UTC offset (``+00:00``), as every answer gives times.
Instant = Annotated[datetime, PlainSerializer(_iso_utc, return_type=str)]


class Accepted(Answer):
    """A write's answer: what it was about, and the stream sequence of its last event (also in
    the ``X-Jetflow-Seq`` header), which a read may wait for with ``?wait_for_seq=``."""

    seq: int
    events: list[str]

    @classmethod
    def of(cls, outcome: CommandOutcome, **fields: Any) -> Response[Self]:
        """The 202 answer of ``outcome``, with the route's own ``fields``."""
        answer = cls(**fields, seq=outcome.last_seq, events=list(outcome.events))
        return Response(
            answer, status_code=HTTP_202_ACCEPTED, headers={SEQ_HEADER: str(outcome.last_seq)}
        )
