"""One lane per callback URL: what makes a slow receiver slow only for itself.

A lane is a queue of webhook aggregates (``<aggregate>-<id>``) with deliveries due at that URL,
drained by a task of its own over a connection of its own (one pool for every endpoint would cost
each request a scan of all its connections), one delivery at a time; aggregates take turns, one
event each. A receiver that hangs holds up its own lane and nothing else. Lanes are only a
schedule: what is due, in which order, lives in the webhook aggregates, so a lane lost with its
process is rebuilt from them (the dispatcher's sweep wakes every aggregate the backlog projection
says has work).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from nats.errors import Error as NatsError

from adapters.event_store import EventStoreError

log = logging.getLogger(__name__)

# Delivers the oldest event due of one webhook aggregate; answers whether more may be due.
DeliverNext = Callable[[str, httpx.AsyncClient], Awaitable[bool]]
# A client of one connection, for one lane.
Connect = Callable[[], httpx.AsyncClient]
RETRY_DELAY_S = 1.0


@dataclass
class _Lane:
    queue: deque[str] = field(default_factory=deque)
    queued: set[str] = field(default_factory=set)
    # Woken while queued or being delivered: look again before letting go of it.
    again: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class Lanes:
    def __init__(self, deliver_next: DeliverNext, connect: Connect) -> None:
        self.deliver_next = deliver_next
        self.connect = connect
        self._lanes: dict[str, _Lane] = {}

    def wake(self, url: str, webhook_id: str) -> None:
        """Something may be due for ``webhook_id`` at ``url``: make sure its lane looks."""
        lane = self._lanes.setdefault(url, _Lane())
        if webhook_id in lane.queued:
            lane.again.add(webhook_id)
        else:
            lane.queued.add(webhook_id)
            lane.queue.append(webhook_id)
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._drain(url, lane), name="webhook-lane")
            lane.task.add_done_callback(_log_failure)

    async def _drain(self, url: str, lane: _Lane) -> None:
        async with self.connect() as http:
            while lane.queue:
                webhook_id = lane.queue[0]  # left at the head if delivery fails, for the next wake
                lane.again.discard(webhook_id)
                try:
                    more = await self.deliver_next(webhook_id, http)
                except (NatsError, EventStoreError, TimeoutError) as unavailable:
                    # The event store is away for a moment: the delivery is still due, try again.
                    log.warning(
                        "webhook %s not delivered now (%s); retrying", webhook_id, unavailable
                    )
                    await asyncio.sleep(RETRY_DELAY_S)
                    continue
                lane.queue.popleft()
                if more or webhook_id in lane.again:
                    lane.queue.append(webhook_id)
                else:
                    lane.queued.discard(webhook_id)
            # Let go of the lane before awaiting the client's close: a wake from then on starts
            # a new lane rather than queueing on this finished one.
            if self._lanes.get(url) is lane:
                del self._lanes[url]

    async def close(self) -> None:
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        self._lanes.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("a webhook lane stopped; its next wake starts it again", exc_info=error)
