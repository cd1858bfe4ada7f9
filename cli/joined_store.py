"""The event store for command-line tools, on the NATS server the service uses.

That is ``NATS_URL``, or the embedded server of a running ``jetflow serve`` found through its
ports file in the data dir; only when no service runs does the tool start the embedded server
on the data dir itself (two servers must never share a store directory). It knows every
aggregate of the catalogue, so histories fold and old payloads are upcast.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from adapters.event_store import JetStreamEventStore, StreamSettings
from adapters.nats_server import EmbeddedNatsServer
from api.settings import Settings
from slices.catalogue import CATALOGUE


@contextlib.asynccontextmanager
async def joined_event_store(settings: Settings) -> AsyncIterator[JetStreamEventStore]:
    store_dir = (settings.data_dir / "nats").resolve()
    embedded: EmbeddedNatsServer | None = None
    url = settings.nats_url or await EmbeddedNatsServer.serving(store_dir)
    if url is None:
        embedded = EmbeddedNatsServer(store_dir=store_dir)
        url = await embedded.start()
    store = await JetStreamEventStore.connect(
        url,
        CATALOGUE.aggregates,
        StreamSettings(name=settings.stream, replicas=settings.stream_replicas),
    )
    try:
        yield store
    finally:
        await store.close()
        if embedded is not None:
            await embedded.stop()
