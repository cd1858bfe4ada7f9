"""A durable JetStream pull consumer driven by one asyncio task.

Hand-written rather than FastStream's batch pull subscriber: with nats-py 2.16, FastStream 0.7.8
catches ``nats.errors.TimeoutError`` around ``fetch`` while nats-py raises the builtin
``TimeoutError``, so every idle fetch crashed its consume task and the supervisor restarted it
with a delay. Owning the loop also lets a batch be handed over as soon as one message arrives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[Msg]], Awaitable[None]]
RETRY_DELAY_S = 1.0


async def consume(
    js: JetStreamContext,
    stream: str,
    durable: str,
    handle: BatchHandler,
    *,
    batch_size: int,
    wait_s: float = 5.0,
) -> None:
    """Hand every fetched batch to ``handle`` until cancelled.

    ``handle`` acknowledges what it applied. If it raises, the batch is negatively acknowledged
    with a delay, so it comes back in order after the fault (a database outage, say) is gone.
    """
    sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
    try:
        while True:
            try:
                msgs = await sub.fetch(batch_size, timeout=wait_s)
            except (TimeoutError, NatsTimeoutError):
                continue
            if not msgs:
                continue
            try:
                await handle(msgs)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consumer %s failed on a batch of %d; retrying", durable, len(msgs))
                for msg in msgs:
                    await msg.nak(delay=RETRY_DELAY_S)
                await asyncio.sleep(RETRY_DELAY_S)
    finally:
        await sub.unsubscribe()
