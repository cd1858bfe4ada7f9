"""HTTP pieces every route module shares: parameters, the write answer, the caller's context."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar

from litestar import Request
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, QueryParameter
from pydantic import StringConstraints, TypeAdapter
from sqlalchemy import ColumnElement, Row, Select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.envelope import Metadata
from adapters.sql import as_utc
from api.auth import QUERY_TOKEN, principal_of
from api.runtime import Runtime
from domain.access import Policy
from domain.base import AGGREGATE_ID_PATTERN
from handlers.commands import CommandContext

SEQ_HEADER = "X-Jetflow-Seq"
# Stream sequences are unsigned 64-bit on the server and signed 64-bit in SQL.
MAX_SEQ = 2**63 - 1
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        max_length=256,
        description="a resend with the same key appends nothing and answers like the first",
    ),
]
WaitForSeq = Annotated[
    int | None,
    QueryParameter(
        name="wait_for_seq",
        ge=1,
        le=MAX_SEQ,
        required=False,
        description="answer only once the read model has applied this stream sequence",
    ),
]
Page = Annotated[int, QueryParameter(ge=1, le=1_000_000)]
PageSize = Annotated[int, QueryParameter(ge=1, le=100)]
# The whole runtime, for what truly reads all of it; a route asks for its parts by name
# (``api.dependencies``).
Rt = NamedDependency[Runtime]


def policy(value: Policy) -> dict[str, Any]:
    """A route's ``opt``: the access policy the guard in ``api.auth`` enforces."""
    return {"policy": value}


PUBLIC = policy(Policy.public)
READ = policy(Policy.read)
OPERATE = policy(Policy.operate)
WORK = policy(Policy.work)
ADMIN = policy(Policy.admin)
CONTRIBUTE = policy(Policy.contribute)
# Live feeds: read access, and the credential may come as ``?token=`` (see ``api.auth``).
LIVE_READ = {**READ, **QUERY_TOKEN}
AUTHENTICATED = policy(Policy.authenticated)
METRICS = policy(Policy.metrics)


def command_context(request: Request[Any, Any, Any], key: str | None) -> CommandContext:
    """Who sends the command: recorded as the events' actor, and the owner scope it acts in."""
    principal = principal_of(request)
    correlation = request.headers.get("X-Correlation-Id")
    actor = principal.actor if principal else "http:anonymous"
    scope = principal.owner_scope if principal else None
    return CommandContext(Metadata(actor=actor, correlation_id=correlation), key, scope)


def owner_scope(request: Request[Any, Any, Any]) -> str | None:
    """Whose rows a read may return: the caller's own unless its role sees everything."""
    principal = principal_of(request)
    return principal.owner_scope if principal else None


def caller(request: Request[Any, Any, Any]) -> str:
    """The user a request acts for."""
    principal = principal_of(request)
    return principal.user if principal else "anonymous"


def visible(request: Request[Any, Any, Any], owner: str) -> bool:
    scope = owner_scope(request)
    return scope is None or scope == owner


Q = TypeVar("Q", bound=Select[Any])


def scoped(query: Q, owner_column: ColumnElement[Any], request: Request[Any, Any, Any]) -> Q:
    """Limit a read to the caller's own rows (admins and workers see every owner's)."""
    scope = owner_scope(request)
    return query if scope is None else query.where(owner_column == scope)


def owner_for_new(request: Request[Any, Any, Any], requested: str | None = None) -> str:
    """The owner of an aggregate being created: the caller, unless a caller who sees every
    owner's (an admin) names another. Every creation asks here, so the rule has one home."""
    principal = principal_of(request)
    if principal is not None and principal.owner_scope is None and requested:
        return requested
    return caller(request)


async def page_rows(
    sessions: async_sessionmaker[AsyncSession],
    query: Select[Any],
    count: Select[Any],
    page: int,
    page_size: int,
) -> tuple[Sequence[Row[Any]], int]:
    """One page of ``query`` (already ordered) and the total ``count`` says it pages through."""
    async with sessions() as session:
        rows = (await session.execute(query.limit(page_size).offset((page - 1) * page_size))).all()
        total = int(await session.scalar(count) or 0)
    return rows, total


def utc(value: datetime | None) -> str | None:
    if value is None:
        return None
    return as_utc(value).isoformat()


_AGGREGATE_ID: TypeAdapter[str] = TypeAdapter(
    Annotated[str, StringConstraints(pattern=AGGREGATE_ID_PATTERN)]
)


def path_id(value: str) -> str:
    """Ids in paths are checked like body fields, so a bad one answers the same field error."""
    return _AGGREGATE_ID.validate_python(value)
