"""The idle-compute seed's own API (``/submit``, ``/get_task``, …) over jetflow's task commands.

Its clients keep working unchanged: the same paths (at the root unless
``JETFLOW_SEED_IDLE_COMPUTE`` moves them under a prefix or turns them off), bodies, statuses,
epoch-float times, integer task ids and ``{"detail": …}`` refusals. Nothing here decides: every
write is the command ``/api/v1`` sends (``handlers.tasks``), every read the same projection.

The integer id of a task is the stream sequence of its ``TaskSubmitted`` (``tasks.created_seq``),
known to the write that made it and rebuilt identically by a replay.

Read-your-writes: the seed's clients read right after they write and know nothing of
``wait_for_seq``, so each write here answers only once the projections it changes have applied
it (at most ``JETFLOW_WAIT_MAX_S``; past that 503, the write recorded). Reads then need no wait.
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, Router, WebSocket, get, post, websocket
from litestar.params import FromPath, JSONBody
from nats.errors import Error as NatsError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Row, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from adapters.envelope import RecordedEvent
from adapters.live_feed import FeedFilter
from api.auth import ANONYMOUS, principal_of
from api.consistency import wait_for_seq
from api.dependencies import AppSettings, Commands, Live, Sessions
from api.errors import ApiError
from api.events import named, serve_websocket
from api.health import VERSION
from api.http import (
    LIVE_READ,
    MAX_SEQ,
    OPERATE,
    PUBLIC,
    READ,
    WORK,
    Rt,
    caller,
    command_context,
    path_id,
)
from api.root import jetflow_document
from api.runtime import Runtime
from api.seeds.idle_compute.answers import (
    DETAIL_HANDLERS,
    SEED_STATUS,
    HealthComponents,
    HeartbeatRecorded,
    Leased,
    NodeCounts,
    NoTask,
    Recorded,
    ResultItem,
    Results,
    SeedHealth,
    SeedService,
    SeedStats,
    Submitted,
    TaskCounts,
    TaskStatusView,
    Throughput,
    epoch,
)
from api.settings import Settings, seed_mount
from api.tasks import read_task_stats
from domain.base import DomainError
from domain.tasks import TASK, NodeId, NodeOffer, TaskStatus
from handlers.tasks import (
    HeartbeatRequest,
    ResultRequest,
    SubmitTaskRequest,
    heartbeat,
    lease_next_task,
    report_result,
    submit_task,
)
from projections.tasks import NODES, TASKS, tasks

# /results answers the newest this many; ``count`` is all of them.
RESULTS_MAX = 1000
Health = Literal["healthy", "unhealthy"]


class SeedBody(BaseModel):
    """The seed ignored unknown fields in its bodies, so its clients may send them."""

    model_config = ConfigDict(extra="ignore")


class SubmitBody(SeedBody):
    code: str
    timeout: int = 300
    resources: dict[str, Any] | None = None


class ResultBody(SeedBody):
    task_id: Annotated[int, Field(ge=1, le=MAX_SEQ)]
    result: str


class HeartbeatBody(SeedBody):
    node_id: NodeId
    status: str | None = None
    resources: dict[str, Any] | None = None
    current_load: dict[str, Any] | None = None


def server_id(settings: Settings) -> str:
    """A short id of this deployment (its stream), the same on every node and restart."""
    return hashlib.sha256(settings.stream.encode()).hexdigest()[:8]


def _scope(request: Request[Any, Any, Any]) -> str | None:
    """Whose tasks a read counts; a caller without credentials on a public route sees only
    what user anonymous owns, never everyone's."""
    principal = principal_of(request)
    return ANONYMOUS if principal is None else principal.owner_scope


def _scoped(query: Any, request: Request[Any, Any, Any]) -> Any:
    scope = _scope(request)
    return query if scope is None else query.where(tasks.c.owner == scope)


def _named(value: str) -> int | str:
    """A task id in a path: the seed's integer, or jetflow's own id (accepted as well)."""
    if value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    try:
        return path_id(value)
    except ValidationError:
        raise ApiError(422, "validation_error", "task_id must be an integer") from None


async def _task(
    sessions: Sessions, request: Request[Any, Any, Any], task_id: int | str
) -> Row[Any]:
    column = tasks.c.created_seq if isinstance(task_id, int) else tasks.c.task_id
    async with sessions() as session:
        row = (await session.execute(select(tasks).where(column == task_id))).first()
    if row is None or _scope(request) not in (None, row.owner):
        raise ApiError(404, "task_not_found", f"Task {task_id} not found")
    return row


def _node_of(request: Request[Any, Any, Any]) -> str:
    """The node a seed client leases and reports for: the user its credential names."""
    user = caller(request)
    try:
        return path_id(user)
    except ValidationError:
        raise ApiError(
            422,
            "user_not_a_node_id",
            f"User {user} cannot name a node (letters, digits, _ and - only); "
            "use a key of another user, or /api/v1/nodes/{node_id}/lease",
        ) from None


def _submit_request(body: SubmitBody, owner: str) -> SubmitTaskRequest:
    """jetflow's request; a refused ``code`` is told in the seed's words (the limit itself is
    the domain's, read from the refusal)."""
    fields: dict[str, Any] = {"code": body.code, "timeout": body.timeout, "owner": owner}
    if body.resources is not None:
        fields["resources"] = body.resources
    try:
        return SubmitTaskRequest.model_validate(fields)
    except ValidationError as refused:
        for error in refused.errors():
            if error["loc"] != ("code",):
                continue
            if error["type"] == "string_too_long":
                limit = (error.get("ctx") or {}).get("max_length")
                raise ApiError(
                    400, "code_too_long", f"Code too long (max {limit} characters)"
                ) from None
            raise ApiError(400, "code_empty", "Code cannot be empty") from None
        raise


class IdleComputeController(Controller):
    path = "/"
    tags = ["seed: idle-compute"]
    exception_handlers = DETAIL_HANDLERS

    @get("/", opt=PUBLIC, summary="The seed's service document, with jetflow's pointers beside it")
    async def service(
        self, request: Request[Any, Any, Any], sessions: Sessions, settings: AppSettings
    ) -> SeedService:
        async with sessions() as session:
            total = await session.scalar(_scoped(select(func.count()).select_from(tasks), request))
            pending = await session.scalar(
                _scoped(select(func.count()).select_from(tasks), request).where(
                    tasks.c.status == TaskStatus.PENDING.value
                )
            )
        own = jetflow_document()
        return SeedService(
            service="Idle Computing Scheduler",
            status="running",
            version=VERSION,
            server_id=server_id(settings),
            task_count=int(total or 0),
            pending_tasks=int(pending or 0),
            api=own.api,
            openapi=own.openapi,
            docs=own.docs,
            health=own.health,
            authentication=own.authentication,
        )

    @post("/submit", opt=OPERATE, status_code=200, summary="Submit a task (seed)")
    async def submit(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        runtime: Rt,
        settings: AppSettings,
        data: JSONBody[SubmitBody],
    ) -> Submitted:
        body = _submit_request(data, caller(request))
        outcome = await submit_task(commands, body, command_context(request, None))
        await wait_for_seq(runtime, (TASKS,), outcome.last_seq)
        alias = outcome.first_seq
        return Submitted(
            task_id=alias,
            status="submitted",
            server_id=server_id(settings),
            message=f"Task {alias} has been queued",
        )

    @get(
        ["/get_task", "/internal/task"],
        opt=WORK,
        summary="Lease the next task to the caller's node (named by its credential)",
    )
    async def get_task(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        sessions: Sessions,
        runtime: Rt,
        settings: AppSettings,
    ) -> Leased | NoTask:
        granted = await lease_next_task(
            commands,
            sessions,
            _node_of(request),
            NodeOffer(),
            command_context(request, None),
            lease_grace_s=settings.lease_grace_s,
        )
        if granted is None:
            return NoTask(
                task_id=None, code=None, status="no_tasks", message="No pending tasks available"
            )
        await wait_for_seq(runtime, (TASKS,), granted.outcome.last_seq)
        async with sessions() as session:
            row = (
                await session.execute(
                    select(tasks.c.created_seq, tasks.c.submitted_at).where(
                        tasks.c.task_id == granted.task_id
                    )
                )
            ).one()
        return Leased(
            task_id=row.created_seq,
            code=granted.code,
            status="assigned",
            created_at=epoch(row.submitted_at) or 0.0,
            message=f"Task {row.created_seq} assigned for execution",
        )

    @post(
        ["/submit_result", "/internal/result"],
        opt=WORK,
        status_code=200,
        summary="Report the result of the task the caller's node holds",
    )
    async def submit_result(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        sessions: Sessions,
        runtime: Rt,
        data: JSONBody[ResultBody],
    ) -> Recorded:
        row = await _task(sessions, request, data.task_id)
        report = ResultRequest(node_id=_node_of(request), result=data.result)
        try:
            outcome = await report_result(
                commands, row.task_id, report, command_context(request, None)
            )
        except DomainError as refused:  # the same refusal, naming the task by the seed's id
            message = refused.message.replace(row.task_id, str(data.task_id))
            raise type(refused)(refused.code, message, field=refused.field) from None
        await wait_for_seq(runtime, (TASKS,), outcome.last_seq)
        return Recorded(
            status="ok", task_id=data.task_id, message=f"Result for task {data.task_id} recorded"
        )

    @get(
        "/status/{task_id:str}",
        opt=READ,
        summary="One task's status by the seed's integer id (or jetflow's own id)",
    )
    async def status(
        self, request: Request[Any, Any, Any], sessions: Sessions, task_id: FromPath[str]
    ) -> TaskStatusView:
        row = await _task(sessions, request, _named(task_id))
        return TaskStatusView(
            task_id=row.created_seq,
            status=SEED_STATUS[row.status],
            result=row.result,
            created_at=epoch(row.submitted_at) or 0.0,
            completed_at=epoch(row.finished_at),
        )

    @get("/results", opt=READ, summary="Results of completed tasks (seed)")
    async def results(
        self, request: Request[Any, Any, Any], sessions: Sessions, settings: AppSettings
    ) -> Results:
        done = tasks.c.status == TaskStatus.COMPLETED.value
        async with sessions() as session:
            rows = (
                await session.execute(
                    _scoped(
                        select(tasks.c.created_seq, tasks.c.result, tasks.c.finished_at), request
                    )
                    .where(done)
                    .order_by(tasks.c.created_seq.desc())
                    .limit(RESULTS_MAX)
                )
            ).all()
            count = await session.scalar(
                _scoped(select(func.count()).select_from(tasks), request).where(done)
            )
        return Results(
            count=int(count or 0),
            results=[
                ResultItem(
                    task_id=r.created_seq, result=r.result, completed_at=epoch(r.finished_at)
                )
                for r in reversed(rows)
            ],
            server_id=server_id(settings),
        )

    @get("/health", opt=PUBLIC, summary="The seed's health check")
    async def health(self, runtime: Rt, settings: AppSettings) -> Response[SeedHealth]:
        queue: Health = "healthy"
        storage: Health = "healthy"
        try:
            await runtime.store.js.stream_info(runtime.store.stream)
        except NatsError:
            queue = "unhealthy"
        try:
            async with runtime.sessions() as session:
                await session.execute(text("SELECT 1"))
        except SQLAlchemyError:
            storage = "unhealthy"
        healthy = queue == storage == "healthy"
        answer = SeedHealth(
            status="healthy" if healthy else "unhealthy",
            timestamp=time.time(),
            server_id=server_id(settings),
            components=HealthComponents(task_queue=queue, memory_storage=storage),
        )
        return Response(answer, status_code=200 if healthy else 503)

    @get("/stats", opt=READ, summary="Counts, run times, nodes and throughput (seed)")
    async def stats(self, request: Request[Any, Any, Any], sessions: Sessions) -> SeedStats:
        async with sessions() as session:
            reading = await read_task_stats(session, _scope(request))
        by_status = dict.fromkeys(SEED_STATUS.values(), 0)
        for status, n in reading.by_status.items():
            by_status[SEED_STATUS[status]] += n
        return SeedStats(
            time_period="all_time",
            tasks=TaskCounts(
                total=reading.total,
                completed=by_status["completed"],
                pending=by_status["pending"],
                running=by_status["running"],
                failed=by_status["failed"],
                avg_time=reading.avg_time,
            ),
            nodes=NodeCounts.model_validate(reading.nodes.model_dump()),
            throughput=Throughput.model_validate(reading.throughput.model_dump()),
        )

    @websocket("/ws/updates", opt=LIVE_READ, name="seed_idle_compute_updates")
    async def updates(self, socket: WebSocket[Any, Any, Any], live: Live, runtime: Rt) -> None:
        """The seed's six events (task_created, task_started, task_completed, task_failed,
        node_joined, node_left) as ``{"event", "data"}``, tasks named by their integer id;
        the live feed's admission, visibility and close codes are ``/api/v1/events/ws``'s."""
        aliases: dict[str, int] = {}

        async def render(event: RecordedEvent) -> dict[str, Any] | None:
            message = named(event)
            if message is None:
                return None
            data = dict(message["data"])
            if event.aggregate == TASK.name:
                alias = await _seed_alias(runtime, aliases, event)
                if alias is None:
                    return None
                data["task_id"] = alias
                data["status"] = SEED_STATUS[data["status"]]
            return {"event": message["event"], "data": data}

        await serve_websocket(socket, live, FeedFilter(None, None, None), None, render)

    @post("/internal/heartbeat", opt=WORK, status_code=200, summary="Node heartbeat (seed)")
    async def heartbeat(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        runtime: Rt,
        data: JSONBody[HeartbeatBody],
    ) -> HeartbeatRecorded:
        node_id = data.node_id
        beat = HeartbeatRequest.model_validate(
            data.model_dump(include={"status", "resources", "current_load"}, exclude_none=True)
        )
        outcome = await heartbeat(commands, node_id, beat, command_context(request, None))
        await wait_for_seq(runtime, (NODES,), outcome.last_seq)
        return HeartbeatRecorded(
            status="ok", node_id=node_id, message=f"Heartbeat from {node_id} recorded"
        )


async def _seed_alias(
    runtime: Runtime, aliases: dict[str, int], event: RecordedEvent
) -> int | None:
    """The integer id of the task ``event`` is about: its own sequence when it creates the task,
    else the read model's ``created_seq`` (waited for: the creation precedes the event); None
    if the read model has no such task (its creation parked)."""
    task_id = event.aggregate_id
    if event.type == "TaskSubmitted":
        aliases[task_id] = event.seq
    if task_id not in aliases:
        await wait_for_seq(runtime, (TASKS,), event.seq)
        async with runtime.sessions() as session:
            created = await session.scalar(
                select(tasks.c.created_seq).where(tasks.c.task_id == task_id)
            )
        if created is None:
            return None
        aliases[task_id] = int(created)
    return aliases[task_id]


def mount(settings: Settings) -> Router | None:
    """The seed's routes where ``JETFLOW_SEED_IDLE_COMPUTE`` puts them (None: off)."""
    prefix = seed_mount("JETFLOW_SEED_IDLE_COMPUTE", settings.seed_idle_compute)
    if prefix is None:
        return None
    return Router(path=prefix or "/", route_handlers=[IdleComputeController])
