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
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[Msg]], Awaitable[None]]
RETRY_DELAY_S = 1.0


class StopConsuming(Exception):
    """Raised by a handler whose batch must not be handed over again: the consumer ends with
    it (a projection halted on an event that keeps failing)."""


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
    with a delay, so it comes back in order after the fault (a database outage, say) is gone;
    ``StopConsuming`` ends the consumer instead.
    """
    sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
    task = asyncio.current_task()
    try:
        while True:
            if task is not None and task.cancelling():
                # Python 3.11's wait_for (inside nats-py's fetch) can swallow a cancellation
                # that races with a reply; the request to stop is still recorded on the task.
                raise asyncio.CancelledError
            try:
                msgs = await sub.fetch(batch_size, timeout=wait_s)
            except (TimeoutError, NatsTimeoutError):
                continue
            except (ServiceUnavailableError, NoRespondersError) as unavailable:
                # The consumer has no leader (a cluster node died) or JetStream is restarting:
                # the durable consumer keeps our place, so wait and fetch again.
                log.warning("consumer %s unavailable (%s); retrying", durable, unavailable)
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            if not msgs:
                continue
            try:
                await handle(msgs)
            except (asyncio.CancelledError, StopConsuming):
                raise
            except Exception:
                log.exception("consumer %s failed on a batch of %d; retrying", durable, len(msgs))
                for msg in msgs:
                    await msg.nak(delay=RETRY_DELAY_S)
                await asyncio.sleep(RETRY_DELAY_S)
    finally:
        await sub.unsubscribe()


async def ensure_durable(
    js: JetStreamContext, stream: str, name: str, subject_filter: str, *, max_ack_pending: int = 1
) -> None:
    """Create a process manager's durable consumer unless it exists.

    It starts with the events published from now on: process managers start with the service,
    before it accepts any command, and their handlers tolerate seeing an event twice.
    """
    try:
        info = await js.consumer_info(stream, name)
    except NotFoundError:
        info = None
    if info is not None and info.config.filter_subject != subject_filter:
        await js.delete_consumer(stream, name)  # made by an older version for other subjects
        info = None
    if info is None:
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=name,
                name=name,
                filter_subject=subject_filter,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=60,
                max_ack_pending=max_ack_pending,
            ),
        )
