"""GET /api/v1/health/live and /api/v1/health/ready: what a supervisor or load balancer asks.

``live`` says only that the process answers HTTP. It does no I/O, so a slow broker or database
never gets a working process restarted. ``ready`` says whether this instance can serve now: NATS
connected, the event stream there, the projection database answering, and every projection
within ``JETFLOW_READY_MAX_LAG_EVENTS`` events of the stream (a read with ``?wait_for_seq=`` would
otherwise wait). It answers 503 naming the checks that failed. Each check is bounded in time, so
a hung broker makes the probe fail rather than hang. Both are public and show no addresses and
no driver messages, only which check failed and why in a word: what an anonymous caller may
know. The detailed report stays ``GET /api/v1/health``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Literal

from litestar import Controller, Response, get
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.answers import Answer, Sparse
from api.http import PUBLIC, Rt
from api.runtime import Runtime
from handlers.projector import events_behind, projection_consumer
from projections.base import Projection

# Longest a readiness check may take; orchestrators time a probe out after a second or two.
READY_CHECK_TIMEOUT_S = 2.0
Outcome = Literal["pass", "fail"]


class Liveness(Answer):
    status: Literal["alive"]


class Check(Sparse):
    status: Outcome
    # Why it failed, in a word: "disconnected", "not_found", or the error's type.
    error: str | None = None


class ProjectionsCheck(Sparse):
    status: Outcome
    max_lag_events: int
    # Projections with more events to apply than the bound, and how many.
    behind: dict[str, int] | None = None
    # Projections without a consumer: not started (yet), or being rebuilt.
    missing: list[str] | None = None
    error: str | None = None


class ReadyChecks(Answer):
    nats: Check
    stream: Check
    database: Check
    projections: ProjectionsCheck


class Readiness(Answer):
    status: Literal["ready", "not_ready"]
    failed: list[str]
    checks: ReadyChecks


class ProbeController(Controller):
    path = "/health"
    tags = ["system"]

    @get("/live", opt=PUBLIC, summary="Liveness: the process answers")
    async def live(self) -> Liveness:
        return Liveness(status="alive")

    @get(
        "/ready",
        opt=PUBLIC,
        summary="Readiness: NATS, the stream, the database and the projections' lag",
        responses={
            HTTP_503_SERVICE_UNAVAILABLE: ResponseSpec(
                Readiness, description="Not ready: `failed` names the checks that failed"
            )
        },
    )
    async def ready(self, runtime: Rt) -> Response[Readiness]:
        connected = runtime.store.nc.is_connected
        nats = Check(status="pass") if connected else Check(status="fail", error="disconnected")
        unreachable = Check(status="fail", error="nats_unavailable")
        bound = runtime.settings.ready_max_lag_events
        if connected:
            stream, database, projections = await asyncio.gather(
                _bounded(runtime.store.js.stream_info(runtime.store.stream)),
                _bounded(_select_one(runtime)),
                _projections(runtime, bound),
            )
        else:
            stream, database = unreachable, await _bounded(_select_one(runtime))
            projections = ProjectionsCheck(
                status="fail", max_lag_events=bound, error="nats_unavailable"
            )
        checks = ReadyChecks(nats=nats, stream=stream, database=database, projections=projections)
        failed = [name for name, check in checks if check.status == "fail"]
        body = Readiness(status="not_ready" if failed else "ready", failed=failed, checks=checks)
        return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE if failed else 200)


async def _select_one(runtime: Runtime) -> None:
    async with runtime.sessions() as session:
        await session.execute(text("SELECT 1"))


async def _bounded(probe: Awaitable[object]) -> Check:
    """Pass if ``probe`` completes in time; fail with the reason in a word if it does not."""
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
            await probe
    except NotFoundError:
        return Check(status="fail", error="not_found")
    except (NatsError, SQLAlchemyError, OSError, TimeoutError) as error:
        return Check(status="fail", error=type(error).__name__)
    return Check(status="pass")


async def _projections(runtime: Runtime, bound: int) -> ProjectionsCheck:
    """Each projection's lag from its durable consumer: events pending plus those delivered
    and not yet acknowledged, as ``GET /health`` counts them."""
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
            lags = await asyncio.gather(
                *(_lag(runtime, projection) for projection in runtime.catalogue.projections)
            )
    except (NatsError, TimeoutError) as error:
        return ProjectionsCheck(status="fail", max_lag_events=bound, error=type(error).__name__)
    named = zip(runtime.catalogue.projections, lags, strict=True)
    measured = [(projection.name, lag) for projection, lag in named]
    behind = {name: lag for name, lag in measured if lag is not None and lag > bound}
    missing = [name for name, lag in measured if lag is None]
    if not behind and not missing:
        return ProjectionsCheck(status="pass", max_lag_events=bound)
    return ProjectionsCheck(
        status="fail",
        max_lag_events=bound,
        **({"behind": behind} if behind else {}),
        **({"missing": missing} if missing else {}),
    )


async def _lag(runtime: Runtime, projection: Projection) -> int | None:
    """None when the projection has no consumer."""
    consumer = await projection_consumer(runtime.store, projection)
    return None if consumer is None else events_behind(consumer)


# Mounted beside ``api.health`` under /api/v1 by the operations slice.
ROUTES = (ProbeController,)
