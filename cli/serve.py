"""``jetflow serve``: the HTTP API on uvicorn over one ``Runtime``, which outlives uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from api.settings import Settings

if TYPE_CHECKING:
    from api.runtime import Runtime


def anonymous_warning(anonymous_role: str | None, host: str) -> str | None:
    """What to warn of when callers without credentials are let in on an address others can
    reach: ``JETFLOW_ANONYMOUS_ROLE`` is meant for a developer's own machine."""
    if anonymous_role is None or host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:  # a host name: others may reach it
        pass
    return (
        f"JETFLOW_ANONYMOUS_ROLE={anonymous_role} on {host}: anyone who reaches this address "
        f"acts as user anonymous with the {anonymous_role} role, without credentials"
    )


async def serve(settings: Settings, host: str | None, port: int | None) -> int:
    from adapters.data_lock import DataDirInUse
    from adapters.tracing import TracingUnavailable
    from api import logs
    from api.app import create_app
    from api.runtime import ProjectionDatabaseUnreadable, Runtime
    from cli.first_run import bootstrap_admin_key
    from handlers.ports import StoreFull
    from slices.catalogue import CATALOGUE

    logs.configure(settings.log_format)
    runtime = Runtime(settings, CATALOGUE)
    try:
        await runtime.start()
    except (DataDirInUse, ProjectionDatabaseUnreadable, StoreFull, TracingUnavailable) as refused:
        print(f"jetflow serve: {refused}", file=sys.stderr)
        return 1
    await bootstrap_admin_key(runtime)
    config = uvicorn.Config(
        create_app(runtime),
        host=host or settings.http_host,
        port=port or settings.http_port,
        log_level="info",
        # uvicorn's loggers propagate to the one handler of `api.logs` (JSON or console).
        log_config=None,
        lifespan="on",
        # The client address is jetflow's to decide (``api.client_address``, from
        # JETFLOW_TRUSTED_PROXIES): uvicorn's own rule would believe X-Forwarded-For from any
        # peer in FORWARDED_ALLOW_IPS (127.0.0.1 by default), a fresh address per spoofed guess.
        proxy_headers=False,
    )
    server = _Server(config, runtime)
    if warning := anonymous_warning(settings.anonymous_role, config.host):
        logging.getLogger("jetflow").warning(warning)
    logging.getLogger("jetflow").info("NATS at %s", runtime.nats_url)
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default
    # handlers that would kill the process before the runtime (and its embedded nats-server)
    # is stopped, so the re-raised signal is made harmless here.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        await server.serve()
    finally:
        await runtime.stop()
    return 0


class _Server(uvicorn.Server):
    """uvicorn waits for open responses before it shuts down; live feeds end on this signal.
    Once it listens, the first-run banner says where to go (``cli.first_run``)."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        from cli.first_run import banner

        await super().startup(sockets)
        if self.started:
            # A log record like every other line: in JSON logs it is one line, on a terminal
            # it reads as written.
            logging.getLogger("jetflow").info(banner(self._base_url(), self.runtime.settings))

    def _base_url(self) -> str:
        """The address as uvicorn logs it, with the port bound (``JETFLOW_PORT=0`` picks one)."""
        host = self.config.host
        port = self.servers[0].sockets[0].getsockname()[1]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.runtime.closing.set()
        super().handle_exit(sig, frame)
