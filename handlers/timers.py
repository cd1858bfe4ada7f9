"""The one timer loop: every slice's time-based checks, fired in turn on every tick.

A check finds what is due in a projection and sends commands that the aggregate checks again, so
a late or doubled tick (two service instances, a stale read model) at worst sends a refused
command. Each check answers how many commands it sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from nats.errors import Error as NatsError
from sqlalchemy.exc import SQLAlchemyError

from adapters.envelope import Metadata
from handlers.commands import CommandContext
from handlers.ports import StoreFull

log = logging.getLogger(__name__)

TIMER = CommandContext(Metadata(actor="system:timer"))
TimerCheck = Callable[[datetime], Awaitable[int]]


async def run_timers(checks: Sequence[TimerCheck], *, interval_s: float) -> None:
    """Fire the checks forever; cancelled at shutdown."""
    task = asyncio.current_task()
    while task is None or not task.cancelling():  # see handlers.consumer.consume
        now = datetime.now(UTC)
        for check in checks:
            try:
                await check(now)
            except StoreFull as full:
                # The operator's to fix; what is due stays due, and is sent once there is room.
                log.warning("timer check could not record: %s", full)
            except (SQLAlchemyError, NatsError, TimeoutError):
                # A database or broker hiccup: logged, and the next tick tries again.
                log.exception("timer check failed")
        await asyncio.sleep(interval_s)
    raise asyncio.CancelledError
