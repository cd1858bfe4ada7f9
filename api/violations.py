"""HTTP routes of the violation catalogue that comments and recommendations cite."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, ConfigDict, TypeAdapter
from sqlalchemy import select

from api import consistency
from api.errors import ApiError
from api.http import ADMIN, AUTHENTICATED, Rt, WaitForSeq, accepted, command_context, utc
from domain.violations import Code, Description, Name, ViolationEntry
from handlers.violations import add_violation, change_violation, remove_violation
from projections.files import VIOLATIONS_CATALOGUE, violations

_CODE: TypeAdapter[str] = TypeAdapter(Code)


class ViolationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = ""


class NewViolation(ViolationBody):
    code: Code


def _view(row: Any) -> dict[str, Any]:
    return {
        "code": row.code,
        "name": row.name,
        "description": row.description,
        "updated_at": utc(row.updated_at),
    }


async def _wait(runtime: Any, seq: int | None) -> None:
    if seq:
        await consistency.wait_for_seq(runtime, (VIOLATIONS_CATALOGUE,), seq)


class ViolationController(Controller):
    path = "/api/v1/violations"
    tags = ["violations"]

    @get("/", opt=AUTHENTICATED, summary="The violation catalogue, by code")
    async def catalogue(self, runtime: Rt, wait_for_seq: WaitForSeq = None) -> list[dict[str, Any]]:
        await _wait(runtime, wait_for_seq)
        async with runtime.sessions() as session:
            rows = (await session.execute(select(violations).order_by(violations.c.code))).all()
        return [_view(r) for r in rows]

    @get("/{code:str}", opt=AUTHENTICATED, summary="One violation category")
    async def one(
        self, runtime: Rt, code: FromPath[str], wait_for_seq: WaitForSeq = None
    ) -> dict[str, Any]:
        await _wait(runtime, wait_for_seq)
        async with runtime.sessions() as session:
            row = (
                await session.execute(select(violations).where(violations.c.code == code))
            ).first()
        if row is None:
            raise ApiError(404, "violation_not_found", f"Violation {code} not found")
        return _view(row)

    @post("/", opt=ADMIN, status_code=202, summary="Add a category (409 violation_exists)")
    async def add(
        self, request: Request[Any, Any, Any], runtime: Rt, data: JSONBody[NewViolation]
    ) -> Response[dict[str, Any]]:
        entry = ViolationEntry(code=data.code, name=data.name, description=data.description)
        outcome = await add_violation(runtime.commands, entry, command_context(request, None))
        return accepted(outcome, code=data.code)

    @put(
        "/{code:str}", opt=ADMIN, status_code=202, summary="Change a category's name or description"
    )
    async def change(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        code: FromPath[str],
        data: JSONBody[ViolationBody],
    ) -> Response[dict[str, Any]]:
        entry = ViolationEntry(
            code=_CODE.validate_python(code), name=data.name, description=data.description
        )
        outcome = await change_violation(runtime.commands, entry, command_context(request, None))
        return accepted(outcome, code=code)

    @delete("/{code:str}", opt=ADMIN, status_code=202, summary="Remove a category")
    async def remove(
        self, request: Request[Any, Any, Any], runtime: Rt, code: FromPath[str]
    ) -> Response[dict[str, Any]]:
        outcome = await remove_violation(
            runtime.commands, _CODE.validate_python(code), command_context(request, None)
        )
        return accepted(outcome, code=code, removed=True)


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (ViolationController,)
