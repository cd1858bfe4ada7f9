"""The named providers: what a route asks for by name instead of reaching through the runtime.

A route declares only the parts it uses (``commands: Commands``, ``sessions: Sessions``, ...);
``dependencies`` builds the providers around one runtime, and the app registers them once.
Each provider reads the runtime when a request asks, so the app can be built (and its OpenAPI
document read) before the runtime is opened.
"""

from __future__ import annotations

from litestar.di import NamedDependency, Provide
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.blob_store import LocalBlobStore
from adapters.event_store import JetStreamEventStore
from adapters.secrets import SecretBox
from api import consistency
from api.http import Rt, WaitForSeq
from api.live import LiveFeeds
from api.runtime import Runtime
from api.settings import Settings
from handlers.commands import CommandService
from handlers.render import FrameScheduler
from handlers.repository import AggregateRepository
from projections.base import Projection

Commands = NamedDependency[CommandService]
# The aggregates' current state, for a read that must not lag behind a projection.
Aggregates = NamedDependency[AggregateRepository]
Sessions = NamedDependency[async_sessionmaker[AsyncSession]]
Store = NamedDependency[JetStreamEventStore]
Blobs = NamedDependency[LocalBlobStore]
AppSettings = NamedDependency[Settings]
Frames = NamedDependency[FrameScheduler]
Secrets = NamedDependency[SecretBox]
Live = NamedDependency[LiveFeeds]
# The read models' sessions, handed out once the route's projections have applied the sequence
# the request names in ``?wait_for_seq=`` (see ``read_after``).
ReadAfter = NamedDependency[async_sessionmaker[AsyncSession]]


def dependencies(runtime: Runtime) -> dict[str, Provide]:
    """Every named provider but ``read_after``, which each controller declares with its
    projections. ``runtime`` itself is provided for what reports on all of it (health) and for
    the read-your-writes wait. Live feeds are admitted by one ``LiveFeeds``, which counts them."""
    live = LiveFeeds(runtime)
    return {
        "runtime": Provide(lambda: runtime, sync_to_thread=False),
        "commands": Provide(lambda: runtime.commands, sync_to_thread=False),
        "aggregates": Provide(lambda: runtime.commands.repository, sync_to_thread=False),
        "sessions": Provide(lambda: runtime.sessions, sync_to_thread=False),
        "store": Provide(lambda: runtime.store, sync_to_thread=False),
        "blobs": Provide(lambda: runtime.blobs, sync_to_thread=False),
        "settings": Provide(lambda: runtime.settings, sync_to_thread=False),
        "frames": Provide(lambda: runtime.frames, sync_to_thread=False),
        "secrets": Provide(lambda: runtime.secrets, sync_to_thread=False),
        "live": Provide(lambda: live, sync_to_thread=False),
    }


def read_after(*projections: Projection) -> Provide:
    """The ``read_after`` provider of routes that read ``projections``: it takes the request's
    ``wait_for_seq`` and answers the read models' sessions only once every one of them has
    applied it (422 ``sequence_not_recorded``, 503 ``projection_behind``). A controller declares
    it in its ``dependencies``; a route reading other projections declares its own."""
    if not projections:
        raise TypeError("read_after needs the projections the route reads")

    async def wait(
        runtime: Rt, wait_for_seq: WaitForSeq = None
    ) -> async_sessionmaker[AsyncSession]:
        if wait_for_seq:
            await consistency.wait_for_seq(runtime, projections, wait_for_seq)
        return runtime.sessions

    return Provide(wait)
