"""Process managers of the task slice: they watch time and events and answer with commands.

They read projections only to find candidates; every command they send is checked again by the
aggregate, so two service instances (or a stale projection) can at worst send a command that is
refused.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from nats.aio.msg import Msg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.envelope import Metadata, events_of
from adapters.event_store import JetStreamEventStore
from domain.nodes import NODE, MarkNodeOffline, NodeStatus, NodeWentOffline
from domain.tasks import ACTIVE, TASK, ExpireLease, RequeueTask
from handlers.commands import CommandContext, CommandService
from handlers.consumer import consume, ensure_durable
from handlers.timers import TIMER
from projections.tasks import nodes, tasks


async def expire_leases(
    commands: CommandService, sessions: async_sessionmaker[AsyncSession], now: datetime
) -> int:
    async with sessions() as session:
        rows = (
            await session.execute(
                select(tasks.c.task_id, tasks.c.attempt).where(
                    tasks.c.status.in_(ACTIVE), tasks.c.lease_deadline < now
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
                    nodes.c.status == NodeStatus.ONLINE, nodes.c.last_heartbeat_at < cutoff
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


async def requeue_tasks_of(
    commands: CommandService, sessions: async_sessionmaker[AsyncSession], node_id: str
) -> int:
    async with sessions() as session:
        held = (
            await session.scalars(
                select(tasks.c.task_id).where(
                    tasks.c.node_id == node_id, tasks.c.status.in_(ACTIVE)
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
    store: JetStreamEventStore,
    commands: CommandService,
    sessions: async_sessionmaker[AsyncSession],
) -> asyncio.Task[None]:
    """Requeue the tasks of every node that goes offline, from its ``NodeWentOffline`` on."""
    subjects = events_of(NODE, NodeWentOffline)
    await ensure_durable(store.js, store.stream, NODE_OFFLINE_CONSUMER, subjects)

    async def handle(msgs: list[Msg]) -> None:
        for msg in msgs:
            await requeue_tasks_of(commands, sessions, store.decode(msg).aggregate_id)
            await msg.ack()

    return asyncio.create_task(
        consume(store.js, store.stream, NODE_OFFLINE_CONSUMER, handle, batch_size=10),
        name="pm-node-offline",
    )
