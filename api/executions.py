"""Pipeline executions over HTTP. One controller, mounted twice: at ``/api/v1/cicd/executions/``
and at the seed's compatibility path ``/api/v1/executions/``."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, Router, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED
from pydantic import Field
from sqlalchemy import Row, func, select
from uuid6 import uuid7

from api.answers import Accepted, Answer, Instant
from api.dependencies import Commands, ReadAfter, read_after
from api.http import (
    OPERATE,
    READ,
    WORK,
    Page,
    PageSize,
    command_context,
    path_id,
)
from domain.base import CallbackUrl, NotFound
from domain.pipelines import (
    EXECUTION,
    CancelExecution,
    Name,
    StageSpec,
    StartExecution,
    StepStatus,
    Trigger,
    UpdateStep,
)
from handlers.wire import WireModel
from projections.pipelines import EXECUTIONS, executions


class StartExecutionRequest(WireModel):
    pipeline: Name
    trigger: Trigger = "manual"
    stages: Annotated[list[StageSpec], Field(min_length=1, max_length=50)]
    callback_url: CallbackUrl | None = None


class StepUpdateRequest(WireModel):
    stage: Name
    step: Name
    status: StepStatus
    log: Annotated[str, Field(max_length=65_536)] = ""


class ExecutionStepView(Answer):
    name: str
    status: StepStatus
    log: str


class ExecutionStageView(Answer):
    name: str
    steps: list[ExecutionStepView]


class ExecutionView(Answer):
    id: str
    pipeline: str
    trigger: Trigger
    triggered_by: str
    status: Literal["running", "success", "failed", "cancelled"]
    stages: list[ExecutionStageView]
    created_at: Instant
    finished_at: Instant | None
    seq: int


class ExecutionPage(Answer):
    results: list[ExecutionView]
    count: int
    page: int
    total_pages: int


class ExecutionStepAccepted(Accepted):
    id: str


class ExecutionAccepted(ExecutionStepAccepted):
    status: Literal["running", "cancelled"]


def execution_view(row: Row[Any]) -> ExecutionView:
    m = row._mapping
    return ExecutionView(
        id=m["execution_id"],
        pipeline=m["pipeline"],
        trigger=m["trigger"],
        triggered_by=m["triggered_by"],
        status=m["status"],
        stages=json.loads(m["stages"]),
        created_at=m["created_at"],
        finished_at=m["finished_at"],
        seq=m["last_seq"],
    )


class ExecutionController(Controller):
    path = "/executions"
    tags = ["pipeline executions"]
    dependencies = {"read_after": read_after(EXECUTIONS)}

    @post("/", opt=OPERATE, status_code=HTTP_202_ACCEPTED, summary="Start a pipeline execution")
    async def start(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        data: JSONBody[StartExecutionRequest],
    ) -> Response[ExecutionAccepted]:
        ctx = command_context(request, None)
        execution_id = str(uuid7())
        command = StartExecution(
            execution_id=execution_id, triggered_by=ctx.metadata.actor, **data.model_dump()
        )
        outcome = await commands.execute(EXECUTION, execution_id, command, ctx)
        return ExecutionAccepted.of(outcome, id=execution_id, status="running")

    @get("/", opt=READ, summary="Executions, newest first")
    async def list_executions(
        self, read_after: ReadAfter, page: Page = 1, page_size: PageSize = 20
    ) -> ExecutionPage:
        async with read_after() as session:
            rows = (
                await session.execute(
                    select(executions)
                    .order_by(executions.c.created_at.desc(), executions.c.execution_id)
                    .limit(page_size)
                    .offset((page - 1) * page_size)
                )
            ).all()
            total = int(await session.scalar(select(func.count()).select_from(executions)) or 0)
        return ExecutionPage(
            results=[execution_view(r) for r in rows],
            count=total,
            page=page,
            total_pages=math.ceil(total / page_size),
        )

    @get("/{execution_id:str}", opt=READ, summary="One execution")
    async def get_execution(
        self, read_after: ReadAfter, execution_id: FromPath[str]
    ) -> ExecutionView:
        async with read_after() as session:
            row = (
                await session.execute(
                    select(executions).where(executions.c.execution_id == execution_id)
                )
            ).first()
        if row is None:
            raise NotFound("execution_not_found", f"Execution {execution_id} not found")
        return execution_view(row)

    @post(
        "/{execution_id:str}/steps",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="Report a step",
    )
    async def update_step(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        execution_id: FromPath[str],
        data: JSONBody[StepUpdateRequest],
    ) -> Response[ExecutionStepAccepted]:
        execution_id = path_id(execution_id)
        command = UpdateStep(execution_id=execution_id, **data.model_dump())
        outcome = await commands.execute(
            EXECUTION, execution_id, command, command_context(request, None)
        )
        return ExecutionStepAccepted.of(outcome, id=execution_id)

    @post(
        "/{execution_id:str}/cancel", opt=OPERATE, status_code=HTTP_202_ACCEPTED, summary="Cancel"
    )
    async def cancel(
        self, request: Request[Any, Any, Any], commands: Commands, execution_id: FromPath[str]
    ) -> Response[ExecutionAccepted]:
        execution_id = path_id(execution_id)
        command = CancelExecution(execution_id=execution_id)
        outcome = await commands.execute(
            EXECUTION, execution_id, command, command_context(request, None)
        )
        return ExecutionAccepted.of(outcome, id=execution_id, status="cancelled")


# What the catalogue mounts for this slice under /api/v1: the same controller at the canonical
# path (/cicd/executions) and at the seed's compatibility path (/executions).
ROUTES = (Router(path="/cicd", route_handlers=[ExecutionController]), ExecutionController)
