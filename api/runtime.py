"""The composition root: builds every adapter, handler and projection of one service process.

``jetflow serve`` and the tests use the same ``Runtime``, given the catalogue of slices it serves
(their projections, subjects, process managers and timers are started from it); with no NATS URL
it brings its own nats-server (embedded default) and stops it again on the way out. The embedded
server requires nkeys (``adapters.nats_auth``) and holds the data folder's lock with the service;
on an external server the service authenticates with the seed or creds file of the settings.
A started runtime traces when the settings say so (``adapters.tracing``); one only opened (the
replay and other command-line tools) never does.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial

from faststream.nats import NatsBroker
from faststream.nats.prometheus import NatsPrometheusMiddleware
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adapters.blob_store import LocalBlobStore
from adapters.data_lock import DataDirLock
from adapters.egress_policy import EgressPolicy
from adapters.event_store import JetStreamEventStore, servers
from adapters.idempotency import KeyValueIdempotencyRecords
from adapters.metrics import APP_NAME, Metrics
from adapters.nats_auth import AUTH_DIR_NAME, NatsAuthDir, NatsCredentials, connect
from adapters.nats_server import EmbeddedNatsServer
from adapters.secrets import SecretBox
from adapters.sql import (
    create_engine,
    default_sqlite_path,
    default_sqlite_url,
    readable_sqlite,
    session_factory,
)
from adapters.tracing import NO_TRACING, Tracing, configure
from api.settings import Settings
from handlers.commands import CommandService
from handlers.projector import Parking, ProjectionProgress, start_projection
from handlers.render import FrameScheduler
from handlers.timers import run_timers
from projections.base import create_tables
from slices.slice import Catalogue

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0


class ProjectionDatabaseUnreadable(RuntimeError):
    """The read models cannot be opened; they are rebuilt from the events, never repaired."""


@dataclass
class Runtime:
    settings: Settings
    # The slices this process serves (``slices.catalogue.CATALOGUE`` in every entrypoint).
    catalogue: Catalogue
    nats_url: str = ""
    embedded: EmbeddedNatsServer | None = None
    # What this process connects to NATS with; None only on an external server left open.
    nats_credentials: NatsCredentials | None = None
    # The NATS users of this data folder: who sends a ``cmd.*`` request, and in which role.
    nats_users: NatsAuthDir = field(init=False)
    data_lock: DataDirLock | None = None
    store: JetStreamEventStore = field(init=False)
    # The remembered answers; health also asks it whether the store takes a write.
    idempotency: KeyValueIdempotencyRecords = field(init=False)
    commands: CommandService = field(init=False)
    engine: AsyncEngine = field(init=False)
    sessions: async_sessionmaker[AsyncSession] = field(init=False)
    frames: FrameScheduler = field(init=False)
    secrets: SecretBox = field(init=False)
    blobs: LocalBlobStore = field(init=False)
    # Where outbound calls may go: checked on callback URLs and on every webhook connection.
    egress: EgressPolicy = field(init=False)
    broker: NatsBroker | None = None
    # The service's spans, if it traces; set by ``start`` before anything else happens.
    tracing: Tracing = field(init=False, default=NO_TRACING)
    progress: ProjectionProgress = field(default_factory=ProjectionProgress)
    # This process's instruments, on a registry of its own (``adapters.metrics``).
    metrics: Metrics = field(default_factory=Metrics)
    # Set when shutdown begins, so live subscriptions end instead of holding the server open.
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, *, projectors: bool = True, timers: bool = True) -> None:
        # First: a missing otel extra refuses the start before the data folder is locked.
        self.tracing = configure(self.settings.tracing, self.settings.tracer_provider)
        await self.open()
        await self.start_handlers(projectors=projectors, timers=timers)

    async def open(self) -> None:
        """Connect the event store and the database, without consuming anything."""
        s = self.settings
        if s.db_url is None and not readable_sqlite(default_sqlite_path(s.data_dir.resolve())):
            raise ProjectionDatabaseUnreadable(
                f"the projection database {default_sqlite_path(s.data_dir.resolve())} is "
                "unreadable; rebuild it from the event stream with `jetflow replay`"
            )
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.egress = EgressPolicy.parse(s.webhook_allow)
        self.nats_users = NatsAuthDir(s.data_dir / AUTH_DIR_NAME, s.nats_seed_file)
        if s.nats_url:
            self.nats_url = s.nats_url
            self.nats_credentials = NatsCredentials.configured(s.nats_seed_file, s.nats_creds)
        else:
            self.nats_url = await self._start_embedded()
            self.nats_credentials = self.nats_users.service_credentials()
        nc = await connect(servers(self.nats_url), self.nats_credentials, "jetflow-event-store")
        self.store = JetStreamEventStore(
            nc, self.catalogue.aggregates, s.stream_settings(), tracing=self.tracing
        )
        await self.store.ensure_stream()
        self.idempotency = await KeyValueIdempotencyRecords.open(
            self.store.js, f"{s.stream}_idempotency", replicas=s.stream_replicas
        )
        self.commands = CommandService(
            self.store,
            self.idempotency,
            egress=self.egress,
            metrics=self.metrics,
            tracing=self.tracing,
        )
        self.engine = create_engine(s.db_url or default_sqlite_url(s.data_dir.resolve()))
        self.tracing.instrument_engine(self.engine)
        self.sessions = session_factory(self.engine)
        self.frames = FrameScheduler(self.sessions)
        self.secrets = SecretBox.from_settings(s.secret_key, s.data_dir)
        self.blobs = LocalBlobStore(s.data_dir / "blobs")
        await create_tables(self.engine)

    async def start_handlers(self, *, projectors: bool = True, timers: bool = True) -> None:
        """Subscribe command subjects, projectors and process managers, and start the timers."""
        s = self.settings
        # Per-message logs at DEBUG: at INFO they cost more than handling a command.
        credentials = self.nats_credentials.options() if self.nats_credentials else {}
        # ``cmd.*`` requests counted on this process's registry (``jetflow_cmd_*``); a second
        # start finds its families there and counts on them.
        counted = NatsPrometheusMiddleware(
            registry=self.metrics.registry, app_name=APP_NAME, metrics_prefix="jetflow_cmd"
        )
        broker = self.broker = NatsBroker(
            servers(self.nats_url),
            logger=log,
            log_level=logging.DEBUG,
            graceful_timeout=10,
            middlewares=(counted,),
            **credentials,
        )
        await broker.connect()
        for subscribe in self.catalogue.subjects:
            subscribe(broker, self)
        await broker.start()
        if projectors:
            for projection in self.catalogue.projections:
                self._tasks.append(
                    await start_projection(
                        self.store,
                        projection,
                        self.sessions,
                        self.progress,
                        batch_size=s.projection_batch,
                        metrics=self.metrics,
                        parking=Parking(self.commands, s.park_after_attempts),
                        tracing=self.tracing,
                    )
                )
        if timers:
            for start_manager in self.catalogue.process_managers:
                self._tasks.append(await start_manager(self))
            for seed in self.catalogue.seeds:
                await seed(self)
            checks = [
                self.metrics.counted_timer(piece.name, partial(check, self))
                for piece in self.catalogue.slices
                for check in piece.timers
            ]
            self._tasks.append(
                asyncio.create_task(
                    run_timers(checks, interval_s=s.timer_interval_s), name="jetflow-timers"
                )
            )

    @property
    def webhook_secret(self) -> bytes:
        """The HMAC key of webhook signatures: configured, or derived from the secret box key."""
        if self.settings.webhook_secret:
            return self.settings.webhook_secret.encode()
        return self.secrets.seal_key_digest()

    async def _start_embedded(self) -> str:
        """Lock the data folder first (``DataDirInUse`` if another service has it), and let the
        server inherit the lock, so that it stays taken until the server is gone too."""
        lock = DataDirLock(self.settings.data_dir)
        await lock.acquire()
        self.data_lock = lock
        self.embedded = EmbeddedNatsServer(
            store_dir=(self.settings.data_dir / "nats").resolve(),
            port=self.settings.embedded_nats_port,
            auth=self.nats_users,
            pass_fds=(lock.fd,),
        )
        try:
            return await self.embedded.start()
        except BaseException:
            lock.release()
            raise

    async def stop_background(self) -> None:
        """Stop projectors, process managers and timers (a crash test kills them this way)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        done, stuck = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                log.error("background task %s had failed", task.get_name(), exc_info=error)
        for task in stuck:
            log.error(
                "background task %s did not stop within %s s", task.get_name(), STOP_TIMEOUT_S
            )

    async def stop(self) -> None:
        self.closing.set()
        await self.stop_background()
        if self.broker is not None:
            await self.broker.stop()
        await self.store.close()
        await self.engine.dispose()
        if self.embedded is not None:
            await self.embedded.stop()
        if self.data_lock is not None:
            self.data_lock.release()
        self.tracing.shutdown()
