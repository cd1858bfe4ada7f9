"""Webhook deliveries: every event of an aggregate created with a callback URL, POSTed to it.

The sources (which aggregates, what their notifications carry) are declared by the slices that
own those aggregates; the dispatcher takes them from the catalogue.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from domain.webhooks import WEBHOOK
from handlers.webhooks import Dispatcher, start_dispatcher
from projections.deployments import WEBHOOKS
from slices.slice import Slice

if TYPE_CHECKING:
    from api.runtime import Runtime


async def _dispatch(rt: Runtime) -> asyncio.Task[None]:
    s = rt.settings
    dispatcher = Dispatcher(
        rt.commands,
        rt.sessions,
        rt.webhook_secret,
        rt.catalogue.webhook_sources,
        rt.egress,
        max_attempts=s.webhook_max_attempts,
        backoff_s=s.webhook_backoff_s,
        timeout_s=s.webhook_timeout_s,
        concurrency=s.webhook_concurrency,
        tracing=rt.tracing,
    )
    return await start_dispatcher(rt.store, dispatcher)


SLICE = Slice(
    name="webhooks",
    aggregates=(WEBHOOK,),
    projections=(WEBHOOKS,),
    process_managers=(_dispatch,),
)
