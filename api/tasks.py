"""HTTP routes of the compute-task slice (seed: idle-compute scheduler), under /api/v1.

Writes answer 202 with the stream sequence of their last event (body ``seq`` and header
``X-Jetflow-Seq``); reads come from projections and accept ``?wait_for_seq=N``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from sqlalchemy import Row, and_, func, select

from api import consistency
from api.errors import ApiError
from api.http import (
    OPERATE,
    READ,
    SEQ_HEADER,
    WORK,
    IdempotencyKey,
    Page,
    PageSize,
    Rt,
    WaitForSeq,
    accepted,
    command_context,
    owned_by_caller,
    owner_scope,
    page_rows,
    path_id,
    scoped,
    utc,
    visible,
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


def task_view(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        "task_id": m["task_id"],
        "status": m["status"],
        "owner": m["owner"],
        "code": m["code"],
        "timeout": m["timeout"],
        "resources": {"cpu": m["cpu"], "memory": m["memory"]},
        "priority": m["priority"],
        "max_attempts": m["max_attempts"],
        "attempt": m["attempt"],
        "node_id": m["node_id"],
        "lease_deadline": utc(m["lease_deadline"]),
        "progress": m["progress"],
        "result": m["result"],
        "error": m["error"],
        "submitted_at": utc(m["submitted_at"]),
        "started_at": utc(m["started_at"]),
        "finished_at": utc(m["finished_at"]),
        "run_time_s": m["run_time_s"],
        "seq": m["last_seq"],
    }


def node_view(row: Row[Any], held: int) -> dict[str, Any]:
    m = row._mapping
    status = m["status"] if m["status"] == "offline" else ("busy" if held else "idle")
    return {
        "node_id": m["node_id"],
        "status": status,
        "tasks_held": held,
        "joined_at": utc(m["joined_at"]),
        "last_heartbeat_at": utc(m["last_heartbeat_at"]),
        "resources": {"cpu_cores": m["cpu_cores"], "memory_mb": m["memory_mb"]},
        "current_load": {"cpu_percent": m["cpu_percent"], "memory_percent": m["memory_percent"]},
    }


class TaskController(Controller):
    path = "/api/v1"
    tags = ["tasks"]

    @post("/tasks", opt=OPERATE, status_code=HTTP_202_ACCEPTED, summary="Submit a task")
    async def submit(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        data: JSONBody[SubmitTaskRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        outcome = await submit_task(
            runtime.commands,
            owned_by_caller(request, data),
            command_context(request, idempotency_key),
        )
        return accepted(
            outcome,
            task_id=outcome.aggregate_id,
            status="pending",
            message=f"Task {outcome.aggregate_id} has been queued",
        )

    @get("/tasks/{task_id:str}", opt=READ, summary="One task")
    async def get_task(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        task_id: FromPath[str],
        wait_for_seq: WaitForSeq = None,
    ) -> dict[str, Any]:
        if wait_for_seq:
            await consistency.wait_for_seq(runtime, (TASKS,), wait_for_seq)
        async with runtime.sessions() as session:
            row = (await session.execute(select(tasks).where(tasks.c.task_id == task_id))).first()
        if row is None or not visible(request, row.owner):
            raise ApiError(404, "task_not_found", f"Task {task_id} not found")
        return task_view(row)

    @get("/tasks", opt=READ, summary="Tasks, newest first, paginated")
    async def list_tasks(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        status: FromQuery[TaskStatus | None] = None,
        page: Page = 1,
        page_size: PageSize = 20,
        wait_for_seq: WaitForSeq = None,
    ) -> dict[str, Any]:
        if wait_for_seq:
            await consistency.wait_for_seq(runtime, (TASKS,), wait_for_seq)
        query = scoped(select(tasks), tasks.c.owner, request)
        count = scoped(select(func.count()).select_from(tasks), tasks.c.owner, request)
        if status is not None:
            query = query.where(tasks.c.status == status.value)
            count = count.where(tasks.c.status == status.value)
        query = query.order_by(tasks.c.submitted_at.desc(), tasks.c.task_id)
        rows, total = await page_rows(runtime, query, count, page, page_size)
        return {
            "items": [task_view(r) for r in rows],
            "page": page,
            "page_size": page_size,
            "total": total,
        }

    @post(
        "/tasks/{task_id:str}/cancel",
        opt=OPERATE,
        status_code=HTTP_202_ACCEPTED,
        summary="Cancel a task",
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        task_id: FromPath[str],
        data: JSONBody[CancelTaskRequest | None] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        body = data or CancelTaskRequest()
        ctx = command_context(request, idempotency_key)
        outcome = await cancel_task(runtime.commands, path_id(task_id), body, ctx)
        return accepted(outcome, task_id=task_id, status="cancelled")

    @post(
        "/tasks/{task_id:str}/progress",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="Report progress",
    )
    async def progress(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        task_id: FromPath[str],
        data: JSONBody[ProgressRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        ctx = command_context(request, idempotency_key)
        outcome = await report_progress(runtime.commands, path_id(task_id), data, ctx)
        return accepted(outcome, task_id=task_id, status="running")

    @post(
        "/tasks/{task_id:str}/result",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="Report a result",
    )
    async def result(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        task_id: FromPath[str],
        data: JSONBody[ResultRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        ctx = command_context(request, idempotency_key)
        outcome = await report_result(runtime.commands, path_id(task_id), data, ctx)
        return accepted(
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
        runtime: Rt,
        node_id: FromPath[str],
        data: JSONBody[NodeOffer | None] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any] | None]:
        granted = await lease_next_task(
            runtime.commands,
            runtime.sessions,
            path_id(node_id),
            data or NodeOffer(),
            command_context(request, idempotency_key),
            lease_grace_s=runtime.settings.lease_grace_s,
        )
        if granted is None:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        seq = granted.outcome.last_seq
        return Response(
            {**lease_answer(granted), "status": "assigned", "seq": seq},
            headers={SEQ_HEADER: str(seq)},
        )

    @post(
        "/nodes/{node_id:str}/heartbeat",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="Node heartbeat",
    )
    async def heartbeat(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        node_id: FromPath[str],
        data: JSONBody[HeartbeatRequest | None] = None,
    ) -> Response[dict[str, Any]]:
        ctx = command_context(request, None)
        outcome = await heartbeat(
            runtime.commands, path_id(node_id), data or HeartbeatRequest(), ctx
        )
        return accepted(outcome, node_id=node_id, status="online")

    @get("/nodes", opt=READ, summary="Worker nodes with their state")
    async def list_nodes(self, runtime: Rt, wait_for_seq: WaitForSeq = None) -> dict[str, Any]:
        if wait_for_seq:
            await consistency.wait_for_seq(runtime, (NODES, TASKS), wait_for_seq)
        async with runtime.sessions() as session:
            rows = (await session.execute(select(nodes).order_by(nodes.c.node_id))).all()
            held = await _tasks_held(session)
        return {"items": [node_view(r, held.get(r.node_id, 0)) for r in rows]}

    @get("/results", opt=READ, summary="Results of completed tasks, newest first")
    async def results(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        page: Page = 1,
        page_size: PageSize = 50,
        wait_for_seq: WaitForSeq = None,
    ) -> dict[str, Any]:
        if wait_for_seq:
            await consistency.wait_for_seq(runtime, (TASKS,), wait_for_seq)
        done = tasks.c.status == TaskStatus.COMPLETED.value
        scope = owner_scope(request)
        if scope is not None:
            done = and_(done, tasks.c.owner == scope)
        async with runtime.sessions() as session:
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
        return {
            "count": total,
            "page": page,
            "page_size": page_size,
            "results": [
                {"task_id": r.task_id, "result": r.result, "completed_at": utc(r.finished_at)}
                for r in rows
            ],
        }

    @get("/stats", opt=READ, summary="Counts by status, run times, throughput and nodes")
    async def stats(
        self, request: Request[Any, Any, Any], runtime: Rt, wait_for_seq: WaitForSeq = None
    ) -> dict[str, Any]:
        if wait_for_seq:
            await consistency.wait_for_seq(runtime, (TASKS, NODES), wait_for_seq)
        hour_ago = datetime.now(UTC) - timedelta(hours=1)
        completed = tasks.c.status == TaskStatus.COMPLETED.value
        async with runtime.sessions() as session:
            by_status = dict(
                (
                    await session.execute(
                        scoped(
                            select(tasks.c.status, func.count()), tasks.c.owner, request
                        ).group_by(tasks.c.status)
                    )
                ).all()
            )
            avg_time, compute_s = (
                await session.execute(
                    scoped(
                        select(func.avg(tasks.c.run_time_s), func.sum(tasks.c.run_time_s)),
                        tasks.c.owner,
                        request,
                    ).where(completed)
                )
            ).one()
            last_hour = await session.scalar(
                scoped(select(func.count()), tasks.c.owner, request).where(
                    completed, tasks.c.finished_at >= hour_ago
                )
            )
            node_rows = (await session.execute(select(nodes.c.node_id, nodes.c.status))).all()
            held = await _tasks_held(session)
        online = [n for n, s in node_rows if s == "online"]
        busy = sum(1 for n in online if held.get(n, 0))
        return {
            "time_period": "all_time",
            "tasks": {
                "total": sum(by_status.values()),
                **{s.value: int(by_status.get(s.value, 0)) for s in TaskStatus},
                "avg_time": round(float(avg_time), 3) if avg_time is not None else None,
            },
            "nodes": {
                "total": len(node_rows),
                "idle": len(online) - busy,
                "busy": busy,
                "offline": len(node_rows) - len(online),
            },
            "throughput": {
                "tasks_per_hour": int(last_hour or 0),
                "compute_hours": round(float(compute_s or 0) / 3600, 6),
            },
        }


async def _tasks_held(session: Any) -> dict[str, int]:
    rows = await session.execute(
        select(tasks.c.node_id, func.count())
        .where(tasks.c.status.in_(("assigned", "running")))
        .group_by(tasks.c.node_id)
    )
    return {node_id: int(n) for node_id, n in rows.all()}


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (TaskController,)
