"""The event store for command-line tools, on the NATS server the service uses.

That is ``NATS_URL`` (with the service credentials of the settings), or the embedded server of a
running ``jetflow serve``: its data folder is locked, and the tool joins the server its ports
file names with the service credentials kept in the data folder. Only when the lock is free (no
service runs) does the tool take it and start the embedded server itself (two servers must
never share a store directory). It knows every aggregate of the catalogue, so histories fold
and old payloads are upcast.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from adapters.data_lock import DataDirLock
from adapters.event_store import JetStreamEventStore, servers
from adapters.nats_auth import AUTH_DIR_NAME, NatsAuthDir, NatsCredentials, connect
from adapters.nats_server import EmbeddedNatsServer
from api.settings import Settings

JOIN_WAIT_S = 30.0


class NoServerToJoin(RuntimeError):
    """The data folder is locked by a service whose nats-server does not answer."""


@contextlib.asynccontextmanager
async def joined_event_store(settings: Settings) -> AsyncIterator[JetStreamEventStore]:
    store_dir = (settings.data_dir / "nats").resolve()
    auth = NatsAuthDir(settings.data_dir / AUTH_DIR_NAME, settings.nats_seed_file)
    embedded: EmbeddedNatsServer | None = None
    lock: DataDirLock | None = None
    credentials: NatsCredentials | None
    if settings.nats_url:
        url = settings.nats_url
        credentials = NatsCredentials.configured(settings.nats_seed_file, settings.nats_creds)
    else:
        credentials = auth.service_credentials()
        lock = DataDirLock(settings.data_dir)
        if lock.try_acquire():
            embedded = EmbeddedNatsServer(store_dir=store_dir, auth=auth, pass_fds=(lock.fd,))
            url = await embedded.start()
        else:
            lock = None
            url = await _served(store_dir, credentials)
    # Imported here, not at the top: the catalogue brings every slice's routes (a second of
    # imports), and `jetflow worker` and the other clients, which share this CLI, never need it.
    from slices.catalogue import CATALOGUE

    try:
        nc = await connect(servers(url), credentials, "jetflow-cli")
        store = JetStreamEventStore(nc, CATALOGUE.aggregates, settings.stream_settings())
        await store.ensure_stream()
        try:
            yield store
        finally:
            await store.close()
    finally:
        if embedded is not None:
            await embedded.stop()
        if lock is not None:
            lock.release()


async def _served(store_dir: Path, credentials: NatsCredentials) -> str:
    """The running service's server; it may still be starting when the tool is run."""
    deadline = asyncio.get_running_loop().time() + JOIN_WAIT_S
    while (url := await EmbeddedNatsServer.serving(store_dir, credentials)) is None:
        if asyncio.get_running_loop().time() > deadline:
            raise NoServerToJoin(
                f"a service holds {store_dir.parent} but no nats-server in {store_dir} answered"
                f" within {JOIN_WAIT_S}s"
            )
        await asyncio.sleep(0.1)
    return url
