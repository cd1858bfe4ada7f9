"""GET /api/v1/health: is every part of the service working, and how far behind are the reads.

Public, so it says whether NATS works and whether the service authenticates to it, but where
the server listens only to an admin: the address is no business of an anonymous caller.
"""

from __future__ import annotations

import time
from typing import Any

import psutil
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from nats.errors import Error as NatsError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.auth import principal_of
from api.http import PUBLIC
from api.runtime import Runtime
from domain.access import Role
from handlers.projector import consumer_name

VERSION = "0.1.0"


class HealthController(Controller):
    path = "/api/v1"
    tags = ["system"]

    @get(
        "/health",
        opt=PUBLIC,
        summary="Health of NATS, the stream, the database and the projections",
    )
    async def health(
        self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]
    ) -> Response[dict[str, Any]]:
        components: dict[str, Any] = {}
        healthy = True
        try:
            info = await runtime.store.js.stream_info(runtime.store.stream)
            nats: dict[str, Any] = {
                "status": "healthy",
                "server": "embedded" if runtime.embedded is not None else "external",
                "authenticated": runtime.nats_credentials is not None,
            }
            principal = principal_of(request)
            if principal is not None and principal.role is Role.admin:
                nats["url"] = runtime.nats_url
            components["nats"] = nats
            components["stream"] = {
                "status": "healthy",
                "name": runtime.store.stream,
                "messages": info.state.messages,
                "last_seq": info.state.last_seq,
            }
            projections: dict[str, Any] = {}
            for projection in runtime.catalogue.projections:
                consumer = await runtime.store.js.consumer_info(
                    runtime.store.stream, consumer_name(projection)
                )
                projections[projection.name] = {
                    "applied_seq": runtime.progress.applied.get(projection.name, 0),
                    "lag_events": (consumer.num_pending or 0) + (consumer.num_ack_pending or 0),
                }
            components["projections"] = projections
        except (NatsError, TimeoutError) as error:
            healthy = False
            components["nats"] = {"status": "unhealthy", "error": type(error).__name__}
        try:
            async with runtime.sessions() as session:
                await session.execute(text("SELECT 1"))
            components["database"] = {"status": "healthy", "dialect": runtime.engine.dialect.name}
        except SQLAlchemyError as error:
            healthy = False
            components["database"] = {"status": "unhealthy", "error": type(error).__name__}
        disk = psutil.disk_usage(str(runtime.settings.data_dir.resolve()))
        components["system"] = {
            "cpu_percent": psutil.cpu_percent(interval=None),
            "memory_percent": psutil.virtual_memory().percent,
            "disk_percent": disk.percent,
            "disk_free_bytes": disk.free,
        }
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "version": VERSION,
            "timestamp": time.time(),
            "components": components,
        }
        return Response(body, status_code=200 if healthy else 503)


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (HealthController,)
