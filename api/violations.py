"""HTTP routes of the violation catalogue that comments and recommendations cite."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, JSONBody
from pydantic import TypeAdapter
from sqlalchemy import select

from api.answers import Accepted, Answer, Instant
from api.dependencies import Commands, ReadAfter, read_after
from api.errors import ApiError
from api.http import ADMIN, AUTHENTICATED, command_context
from domain.violations import Code, Description, Name, ViolationEntry
from handlers.violations import add_violation, change_violation, remove_violation
from handlers.wire import WireModel
from projections.files import VIOLATIONS_CATALOGUE, violations

_CODE: TypeAdapter[str] = TypeAdapter(Code)


class ViolationBody(WireModel):
    name: Name
    description: Description = ""


class NewViolation(ViolationBody):
    code: Code


class ViolationView(Answer):
    code: str
    name: str
    description: str
    updated_at: Instant


class ViolationAccepted(Accepted):
    code: str


class ViolationRemoved(Accepted):
    code: str
    removed: bool


class ViolationController(Controller):
    path = "/violations"
    tags = ["violations"]
    dependencies = {"read_after": read_after(VIOLATIONS_CATALOGUE)}

    @get("/", opt=AUTHENTICATED, summary="The violation catalogue, by code")
    async def catalogue(self, read_after: ReadAfter) -> list[ViolationView]:
        async with read_after() as session:
            rows = (await session.execute(select(violations).order_by(violations.c.code))).all()
        return [ViolationView.model_validate(r) for r in rows]

    @get("/{code:str}", opt=AUTHENTICATED, summary="One violation category")
    async def one(self, read_after: ReadAfter, code: FromPath[str]) -> ViolationView:
        async with read_after() as session:
            row = (
                await session.execute(select(violations).where(violations.c.code == code))
            ).first()
        if row is None:
            raise ApiError(404, "violation_not_found", f"Violation {code} not found")
        return ViolationView.model_validate(row)

    @post("/", opt=ADMIN, status_code=202, summary="Add a category (409 violation_exists)")
    async def add(
        self, request: Request[Any, Any, Any], commands: Commands, data: JSONBody[NewViolation]
    ) -> Response[ViolationAccepted]:
        entry = ViolationEntry(code=data.code, name=data.name, description=data.description)
        outcome = await add_violation(commands, entry, command_context(request, None))
        return ViolationAccepted.of(outcome, code=data.code)

    @put(
        "/{code:str}", opt=ADMIN, status_code=202, summary="Change a category's name or description"
    )
    async def change(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        code: FromPath[str],
        data: JSONBody[ViolationBody],
    ) -> Response[ViolationAccepted]:
        entry = ViolationEntry(
            code=_CODE.validate_python(code), name=data.name, description=data.description
        )
        outcome = await change_violation(commands, entry, command_context(request, None))
        return ViolationAccepted.of(outcome, code=code)

    @delete("/{code:str}", opt=ADMIN, status_code=202, summary="Remove a category")
    async def remove(
        self, request: Request[Any, Any, Any], commands: Commands, code: FromPath[str]
    ) -> Response[ViolationRemoved]:
        outcome = await remove_violation(
            commands, _CODE.validate_python(code), command_context(request, None)
        )
        return ViolationRemoved.of(outcome, code=code, removed=True)


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (ViolationController,)
