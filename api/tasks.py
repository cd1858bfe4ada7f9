"""HTTP routes of the compute-task slice (seed: idle-compute scheduler), under /api/v1.

Writes answer 202 with the stream sequence of their last event (body ``seq`` and header
``X-Jetflow-Seq``); reads come from projections and accept ``?wait_for_seq=N``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.dependencies import AppSettings, Commands, ReadAfter, Sessions, read_after
from api.errors import ApiError
from api.http import (
    OPERATE,
    READ,
    SEQ_HEADER,
    WORK,
    IdempotencyKey,
    Page,
    PageSize,
    command_context,
    owner_for_new,
    owner_scope,
    page_rows,
    path_id,
    scoped,
    visible,
)
from api.task_answers import (
    NodeAccepted,
    NodeCounts,
    NodeList,
    ResultPage,
    TaskAccepted,
    TaskAcceptedWithMessage,
    TaskCounts,
    TaskLease,
    TaskPage,
    TaskResult,
    TaskStats,
    TaskView,
    Throughput,
    node_view,
    task_view,
)
from domain.tasks import NodeOffer, TaskStatus
from handlers.tasks import (
    CancelTaskRequest,
    HeartbeatRequest,
    ProgressRequest,
    ResultRequest,
    SubmitTaskRequest,
    cancel_task,
    heartbeat,
    lease_answer,
    lease_next_task,
    report_progress,
    report_result,
    submit_task,
)
from projections.tasks import NODES, TASKS, nodes, tasks


class TaskController(Controller):
    path = "/"
    tags = ["tasks"]
    dependencies = {"read_after": read_after(TASKS)}

    @post("/tasks", opt=OPERATE, status_code=HTTP_202_ACCEPTED, summary="Submit a task")
    async def submit(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        data: JSONBody[SubmitTaskRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[TaskAcceptedWithMessage]:
        requested = data.owner if "owner" in data.model_fields_set else None
        body = data.model_copy(update={"owner": owner_for_new(request, requested)})
        outcome = await submit_task(commands, body, command_context(request, idempotency_key))
        return TaskAcceptedWithMessage.of(
            outcome,
            task_id=outcome.aggregate_id,
            status="pending",
            message=f"Task {outcome.aggregate_id} has been queued",
        )

    @get("/tasks/{task_id:str}", opt=READ, summary="One task")
    async def get_task(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        task_id: FromPath[str],
    ) -> TaskView:
        async with read_after() as session:
            row = (await session.execute(select(tasks).where(tasks.c.task_id == task_id))).first()
        if row is None or not visible(request, row.owner):
            raise ApiError(404, "task_not_found", f"Task {task_id} not found")
        return task_view(row)

    @get("/tasks", opt=READ, summary="Tasks, newest first, paginated")
    async def list_tasks(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        status: FromQuery[TaskStatus | None] = None,
        page: Page = 1,
        page_size: PageSize = 20,
    ) -> TaskPage:
        query = scoped(select(tasks), tasks.c.owner, request)
        count = scoped(select(func.count()).select_from(tasks), tasks.c.owner, request)
        if status is not None:
            query = query.where(tasks.c.status == status.value)
            count = count.where(tasks.c.status == status.value)
        query = query.order_by(tasks.c.submitted_at.desc(), tasks.c.task_id)
        rows, total = await page_rows(read_after, query, count, page, page_size)
        return TaskPage(
            items=[task_view(r) for r in rows], page=page, page_size=page_size, total=total
        )

    @post(
        "/tasks/{task_id:str}/cancel",
        opt=OPERATE,
        status_code=HTTP_202_ACCEPTED,
        summary="Cancel a task",
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        task_id: FromPath[str],
        data: JSONBody[CancelTaskRequest | None] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[TaskAccepted]:
        body = data or CancelTaskRequest()
        ctx = command_context(request, idempotency_key)
        outcome = await cancel_task(commands, path_id(task_id), body, ctx)
        return TaskAccepted.of(outcome, task_id=task_id, status="cancelled")

    @post(
        "/tasks/{task_id:str}/progress",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="Report progress",
    )
    async def progress(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        task_id: FromPath[str],
        data: JSONBody[ProgressRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[TaskAccepted]:
        ctx = command_context(request, idempotency_key)
        outcome = await report_progress(commands, path_id(task_id), data, ctx)
        return TaskAccepted.of(outcome, task_id=task_id, status="running")

    @post(
        "/tasks/{task_id:str}/result",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="Report a result",
    )
    async def result(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        task_id: FromPath[str],
        data: JSONBody[ResultRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[TaskAcceptedWithMessage]:
        ctx = command_context(request, idempotency_key)
        outcome = await report_result(commands, path_id(task_id), data, ctx)
        return TaskAcceptedWithMessage.of(
            outcome,
            task_id=task_id,
            status=data.outcome,
            message=f"Result for task {task_id} recorded",
        )

    @post(
        "/nodes/{node_id:str}/lease",
        opt=WORK,
        status_code=200,
        summary="A worker node pulls the next task (204 when there is none)",
    )
    async def lease(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        sessions: Sessions,
        settings: AppSettings,
        node_id: FromPath[str],
        data: JSONBody[NodeOffer | None] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[TaskLease | None]:
        granted = await lease_next_task(
            commands,
            sessions,
            path_id(node_id),
            data or NodeOffer(),
            command_context(request, idempotency_key),
            lease_grace_s=settings.lease_grace_s,
        )
        if granted is None:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        seq = granted.outcome.last_seq
        lease = TaskLease(**lease_answer(granted), status="assigned", seq=seq)
        return Response(lease, headers={SEQ_HEADER: str(seq)})

    @post(
        "/nodes/{node_id:str}/heartbeat",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="Node heartbeat",
    )
    async def heartbeat(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        node_id: FromPath[str],
        data: JSONBody[HeartbeatRequest | None] = None,
    ) -> Response[NodeAccepted]:
        ctx = command_context(request, None)
        outcome = await heartbeat(commands, path_id(node_id), data or HeartbeatRequest(), ctx)
        return NodeAccepted.of(outcome, node_id=node_id, status="online")

    @get(
        "/nodes",
        opt=READ,
        summary="Worker nodes with their state",
        dependencies={"read_after": read_after(NODES, TASKS)},
    )
    async def list_nodes(self, read_after: ReadAfter) -> NodeList:
        async with read_after() as session:
            rows = (await session.execute(select(nodes).order_by(nodes.c.node_id))).all()
            held = await _tasks_held(session)
        return NodeList(items=[node_view(r, held.get(r.node_id, 0)) for r in rows])

    @get("/results", opt=READ, summary="Results of completed tasks, newest first")
    async def results(
        self,
        request: Request[Any, Any, Any],
        read_after: ReadAfter,
        page: Page = 1,
        page_size: PageSize = 50,
    ) -> ResultPage:
        done = tasks.c.status == TaskStatus.COMPLETED.value
        scope = owner_scope(request)
        if scope is not None:
            done = and_(done, tasks.c.owner == scope)
        async with read_after() as session:
            rows = (
                await session.execute(
                    select(tasks.c.task_id, tasks.c.result, tasks.c.finished_at)
                    .where(done)
                    .order_by(tasks.c.finished_at.desc(), tasks.c.task_id)
                    .limit(page_size)
                    .offset((page - 1) * page_size)
                )
            ).all()
            total = await session.scalar(select(func.count()).select_from(tasks).where(done))
        return ResultPage(
            count=total,
            page=page,
            page_size=page_size,
            results=[
                TaskResult(task_id=r.task_id, result=r.result, completed_at=r.finished_at)
                for r in rows
            ],
        )

    @get(
        "/stats",
        opt=READ,
        summary="Counts by status, run times, throughput and nodes",
        dependencies={"read_after": read_after(TASKS, NODES)},
    )
    async def stats(self, request: Request[Any, Any, Any], read_after: ReadAfter) -> TaskStats:
        async with read_after() as session:
            reading = await read_task_stats(session, owner_scope(request))
        return TaskStats(
            time_period="all_time",
            tasks=TaskCounts(
                total=reading.total,
                **{s.value: reading.by_status.get(s.value, 0) for s in TaskStatus},
                avg_time=reading.avg_time,
            ),
            nodes=reading.nodes,
            throughput=reading.throughput,
        )


@dataclass(frozen=True)
class TaskStatsReading:
    """What a stats answer is made of, read once for ``/api/v1/tasks/stats`` and for the
    idle-compute seed's ``/stats``, which only name the statuses differently."""

    by_status: dict[str, int]
    avg_time: float | None
    nodes: NodeCounts
    throughput: Throughput

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


async def read_task_stats(session: AsyncSession, scope: str | None) -> TaskStatsReading:
    """Counts by status, run times and throughput of ``scope``'s tasks (everyone's for None),
    and the nodes: online ones holding a task are busy."""

    def owned(query: Any) -> Any:
        return query if scope is None else query.where(tasks.c.owner == scope)

    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    completed = tasks.c.status == TaskStatus.COMPLETED.value
    rows = await session.execute(
        owned(select(tasks.c.status, func.count())).group_by(tasks.c.status)
    )
    by_status = {status: int(n) for status, n in rows.all()}
    avg_time, compute_s = (
        await session.execute(
            owned(select(func.avg(tasks.c.run_time_s), func.sum(tasks.c.run_time_s))).where(
                completed
            )
        )
    ).one()
    last_hour = await session.scalar(
        owned(select(func.count())).where(completed, tasks.c.finished_at >= hour_ago)
    )
    node_rows = (await session.execute(select(nodes.c.node_id, nodes.c.status))).all()
    held = await _tasks_held(session)
    online = [n for n, s in node_rows if s == "online"]
    busy = sum(1 for n in online if held.get(n, 0))
    return TaskStatsReading(
        by_status=by_status,
        avg_time=round(float(avg_time), 3) if avg_time is not None else None,
        nodes=NodeCounts(
            total=len(node_rows),
            idle=len(online) - busy,
            busy=busy,
            offline=len(node_rows) - len(online),
        ),
        throughput=Throughput(
            tasks_per_hour=int(last_hour or 0),
            compute_hours=round(float(compute_s or 0) / 3600, 6),
        ),
    )


async def _tasks_held(session: Any) -> dict[str, int]:
    rows = await session.execute(
        select(tasks.c.node_id, func.count())
        .where(tasks.c.status.in_(("assigned", "running")))
        .group_by(tasks.c.node_id)
    )
    return {node_id: int(n) for node_id, n in rows.all()}


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (TaskController,)
