"""One owner per data folder: an exclusive ``flock`` on ``<data dir>/jetflow.lock``.

Two nats-servers on one JetStream store both acknowledge writes and lose some of them, so the
process that serves a data folder (``jetflow serve``, or a CLI tool that starts the embedded
server because no service runs) holds this lock, and hands the locked descriptor to its
nats-server child: the lock is free only once both are gone. A restart after ``kill -9`` waits
for the old server (which dies with its parent) to let go; a second service refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from pathlib import Path

import psutil

LOCK_NAME = "jetflow.lock"
_POLL_S = 0.05


class DataDirInUse(RuntimeError):
    """Another process serves this data folder."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir).resolve() / LOCK_NAME
        self._fd: int | None = None

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise RuntimeError("the data folder lock is not held")
        return self._fd

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False at once if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    async def acquire(self, leftover_wait_s: float = 15.0) -> None:
        """Take the lock, waiting for a leftover of a dead owner (its nats-server still shutting
        down) but refusing at once while the owner that wrote the lock file is alive."""
        deadline = time.monotonic() + leftover_wait_s
        while not self.try_acquire():
            owner = self.owner()
            alive = owner is not None and psutil.pid_exists(owner)
            if not alive and time.monotonic() < deadline:
                await asyncio.sleep(_POLL_S)
                continue
            holder = f"process {owner}" if alive else "a nats-server its dead owner left running"
            raise DataDirInUse(
                f"the data folder {self.path.parent} is in use by {holder} (it holds "
                f"{self.path}): stop it first, or give this service another JETFLOW_DATA_DIR"
            )

    def owner(self) -> int | None:
        """The pid the current holder wrote, if it is readable."""
        with contextlib.suppress(OSError, ValueError):
            return int(self.path.read_text().strip())
        return None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
