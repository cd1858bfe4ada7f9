"""/api/v1/parked: events a projection set aside after they kept failing, and their resolution.

Admin only: a parked event names a projection, a sequence and an error text from the service's
own code. Retry applies the event (409 ``parked_event_still_failing`` if it fails again, and
nothing is recorded); skip resolves it without applying it (``handlers.parking``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, QueryParameter
from pydantic import TypeAdapter

from api.answers import Accepted, Answer, Instant
from api.dependencies import Commands, ReadAfter, read_after
from api.http import ADMIN, Rt, command_context
from domain.parking import ProjectionName, Seq
from handlers.parking import list_parked, retry_parked, skip_parked
from projections.parking import PARKED

_PROJECTION: TypeAdapter[str] = TypeAdapter(ProjectionName)
_SEQ: TypeAdapter[int] = TypeAdapter(Seq)


class ParkedView(Answer):
    projection: str
    seq: int
    event_type: str
    error: str
    attempts: int
    status: str
    parked_at: Instant
    resolved_at: Instant | None
    resolved_by: str | None


class ParkedAccepted(Accepted):
    projection: str
    parked_seq: int


class ParkedController(Controller):
    path = "/parked"
    tags = ["operations"]
    dependencies = {"read_after": read_after(PARKED)}

    @get("/", opt=ADMIN, summary="Parked events, by projection and sequence")
    async def list(
        self,
        read_after: ReadAfter,
        include_resolved: Annotated[
            bool, QueryParameter(description="also those already retried or skipped")
        ] = False,
    ) -> list[ParkedView]:
        parked = await list_parked(read_after, include_resolved=include_resolved)
        return [ParkedView.model_validate(asdict(p)) for p in parked]

    @post(
        "/{projection:str}/{seq:int}/retry",
        opt=ADMIN,
        summary="Apply a parked event again and unpark it (409 parked_event_still_failing)",
    )
    async def retry(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        projection: FromPath[str],
        seq: FromPath[int],
    ) -> Response[ParkedAccepted]:
        name, number = _PROJECTION.validate_python(projection), _SEQ.validate_python(seq)
        outcome = await retry_parked(
            runtime.store,
            runtime.commands,
            runtime.sessions,
            {p.name: p for p in runtime.catalogue.projections},
            name,
            number,
            command_context(request, None).metadata.actor,
        )
        return ParkedAccepted.of(outcome, projection=name, parked_seq=number)

    @post(
        "/{projection:str}/{seq:int}/skip",
        opt=ADMIN,
        summary="Resolve a parked event without applying it",
    )
    async def skip(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        projection: FromPath[str],
        seq: FromPath[int],
    ) -> Response[ParkedAccepted]:
        name, number = _PROJECTION.validate_python(projection), _SEQ.validate_python(seq)
        actor = command_context(request, None).metadata.actor
        outcome = await skip_parked(commands, name, number, actor)
        return ParkedAccepted.of(outcome, projection=name, parked_seq=number)


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (ParkedController,)
