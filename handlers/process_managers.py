"""Process managers of the task slice: they watch time and events and answer with commands.

They read projections only to find candidates; every command they send is checked again by the
aggregate, so two service instances (or a stale projection) can at worst send a command that is
refused.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.blob_store import BlobStore
from adapters.envelope import Metadata, decode
from domain.nodes import NODE, MarkNodeOffline
from domain.tasks import TASK, ExpireLease, RequeueTask
from handlers.commands import CommandContext, CommandService
from handlers.consumer import consume, ensure_durable
from handlers.deployments import expire_deployments
from handlers.refer_keys import advance_refer_keys
from handlers.render import expire_render_jobs, time_out_frames
from handlers.uploads import expire_uploads
from projections.tasks import nodes, tasks

log = logging.getLogger(__name__)

TIMER = CommandContext(Metadata(actor="system:timer"))


async def expire_leases(
    commands: CommandService, sessions: async_sessionmaker[AsyncSession], now: datetime
) -> int:
    async with sessions() as session:
        rows = (
            await session.execute(
                select(tasks.c.task_id, tasks.c.attempt).where(
                    tasks.c.status.in_(("assigned", "running")), tasks.c.lease_deadline < now
                )
            )
        ).all()
    return await commands.execute_each(
        TASK,
        (
            (task_id, ExpireLease(task_id=task_id, attempt=attempt, at=now))
            for task_id, attempt in rows
        ),
        TIMER,
        at=now,
    )


async def mark_silent_nodes(
    commands: CommandService,
    sessions: async_sessionmaker[AsyncSession],
    now: datetime,
    silence_s: float,
) -> int:
    cutoff = now - timedelta(seconds=silence_s)
    async with sessions() as session:
        silent = (
            await session.scalars(
                select(nodes.c.node_id).where(
                    nodes.c.status == "online", nodes.c.last_heartbeat_at < cutoff
                )
            )
        ).all()
    return await commands.execute_each(
        NODE,
        (
            (node_id, MarkNodeOffline(node_id=node_id, at=now, silence_s=silence_s))
            for node_id in silent
        ),
        TIMER,
        at=now,
    )


async def run_timers(
    commands: CommandService,
    sessions: async_sessionmaker[AsyncSession],
    *,
    interval_s: float,
    silence_s: float,
    refer_rotate_s: float,
    blobs: BlobStore,
) -> None:
    """Fire the time-based checks forever; cancelled at shutdown."""
    checks = (
        lambda now: expire_leases(commands, sessions, now),
        lambda now: mark_silent_nodes(commands, sessions, now, silence_s),
        lambda now: time_out_frames(commands, sessions, now),
        lambda now: expire_render_jobs(commands, sessions, now),
        lambda now: expire_deployments(commands, sessions, now),
        lambda now: expire_uploads(commands, sessions, blobs, now),
        lambda now: advance_refer_keys(commands, sessions, now, refer_rotate_s),
    )
    task = asyncio.current_task()
    while task is None or not task.cancelling():  # see handlers.consumer.consume
        now = datetime.now(UTC)
        for check in checks:
            try:
                await check(now)
            except (SQLAlchemyError, NatsError, TimeoutError):
                # A database or broker hiccup: logged, and the next tick tries again.
                log.exception("timer check failed")
        await asyncio.sleep(interval_s)
    raise asyncio.CancelledError


async def requeue_tasks_of(
    commands: CommandService, sessions: async_sessionmaker[AsyncSession], node_id: str
) -> int:
    async with sessions() as session:
        held = (
            await session.scalars(
                select(tasks.c.task_id).where(
                    tasks.c.node_id == node_id, tasks.c.status.in_(("assigned", "running"))
                )
            )
        ).all()
    context = CommandContext(Metadata(actor="system:node-watch"))
    reason = f"node {node_id} offline"
    await commands.execute_each(
        TASK,
        (
            (task_id, RequeueTask(task_id=task_id, node_id=node_id, reason=reason))
            for task_id in held
        ),
        context,
    )
    return len(held)


NODE_OFFLINE_CONSUMER = "pm-node-offline"


async def start_node_offline_requeuer(
    js: JetStreamContext,
    stream: str,
    commands: CommandService,
    sessions: async_sessionmaker[AsyncSession],
) -> asyncio.Task[None]:
    """Requeue the tasks of every node that goes offline, from its ``NodeWentOffline`` on."""
    await ensure_durable(js, stream, NODE_OFFLINE_CONSUMER, "ev.node.*.NodeWentOffline")
    return _start(js, stream, commands, sessions)


def _start(
    js: JetStreamContext,
    stream: str,
    commands: CommandService,
    sessions: async_sessionmaker[AsyncSession],
) -> asyncio.Task[None]:
    async def handle(msgs: list[Msg]) -> None:
        for msg in msgs:
            await requeue_tasks_of(commands, sessions, decode(0, msg.data).aggregate_id)
            await msg.ack()

    return asyncio.create_task(
        consume(js, stream, NODE_OFFLINE_CONSUMER, handle, batch_size=10),
        name="pm-node-offline",
    )
