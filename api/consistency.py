"""Read-your-writes: a read may ask to wait until a projection has applied a given sequence.

A projection has *reached* sequence N when its checkpoint is at N or beyond, or when its durable
consumer has nothing pending or unacknowledged while the stream already holds N (N then lies
outside the projection's subjects, and everything inside them up to N is applied).
"""

from __future__ import annotations

import asyncio
import contextlib

from api.errors import ApiError
from api.runtime import Runtime
from handlers.projector import events_behind, projection_consumer
from projections.base import Projection

POLL_S = 0.05


async def _reached(runtime: Runtime, projection: Projection, seq: int) -> bool:
    if runtime.progress.applied.get(projection.name, 0) >= seq:
        return True
    if await runtime.store.last_seq() < seq:
        return False
    consumer = await projection_consumer(runtime.store, projection)
    # No consumer: no projector has ever run, so nothing is applied.
    return consumer is not None and events_behind(consumer) == 0


async def wait_for_seq(runtime: Runtime, projections: tuple[Projection, ...], seq: int) -> None:
    """Wait until every projection has reached ``seq``; a sequence the stream does not hold yet
    was never answered to a write, so it is refused at once instead of waited for."""
    if seq > await runtime.store.last_seq():
        raise ApiError(
            422,
            "sequence_not_recorded",
            f"wait_for_seq={seq} is beyond the last recorded sequence; "
            "use the seq a write answered",
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + runtime.settings.wait_max_s
    changed = runtime.progress.changed
    for projection in projections:
        while not await _reached(runtime, projection, seq):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ApiError(
                    503,
                    "projection_behind",
                    f"Projection {projection.name} has not reached sequence {seq} within "
                    f"{runtime.settings.wait_max_s:g} s",
                    headers={"Retry-After": "1"},
                )
            async with changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(remaining, POLL_S))
