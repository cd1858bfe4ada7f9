"""The embedded nats-server: several can run side by side on random ports, stop() really ends the
process, and a SIGKILLed server restarted on the same store keeps what JetStream acknowledged.

These tests start their own servers (never the session fixture, never port 4222), so they hold
whether or not a system nats-server is running.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import nats
import psutil
import pytest
from nats.errors import Error as NatsError
from nats.js.api import StreamConfig

from adapters.data_lock import DataDirInUse, DataDirLock
from adapters.nats_auth import NatsAuthDir, NatsCredentials, NatsRole, connect, inbox_prefix
from adapters.nats_server import (
    DEFAULT_CONFIG,
    EmbeddedNatsServer,
    NatsServerReloadError,
    NatsServerStartError,
    find_nats_server_binary,
    serving_pid,
    signal_reload,
)


def gone(pid: int) -> bool:
    """Exited and reaped, or at worst a zombie: either way no longer serving."""
    if not psutil.pid_exists(pid):
        return True
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def jetstream_account_info_ok(url: str) -> bool:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        info = await nc.jetstream().account_info()
        return info.limits is not None
    finally:
        await nc.close()


def test_binary_is_the_wheels_not_the_system_one() -> None:
    binary = find_nats_server_binary()
    assert binary.is_file()
    assert not str(binary).startswith(("/usr/sbin", "/usr/bin", "/sbin"))


async def test_two_servers_at_once_on_random_ports(tmp_path: Path) -> None:
    first = EmbeddedNatsServer(store_dir=tmp_path / "a")
    second = EmbeddedNatsServer(store_dir=tmp_path / "b")
    try:
        urls = await asyncio.gather(first.start(), second.start())
        assert urls[0] != urls[1]
        assert all(url.startswith("nats://127.0.0.1:") for url in urls)
        assert ":4222" not in urls[0] and ":4222" not in urls[1]
        assert await jetstream_account_info_ok(first.url)
        assert await jetstream_account_info_ok(second.url)
        # The command line won over the config: the store is ours, and the log went to a file.
        assert (tmp_path / "a" / "jetstream").is_dir()
        assert (tmp_path / "b" / "jetstream").is_dir()
        assert "Server is ready" in first.log_file.read_text()
    finally:
        await asyncio.gather(first.stop(), second.stop())


async def test_stop_terminates_the_process(tmp_path: Path) -> None:
    async with EmbeddedNatsServer(store_dir=tmp_path / "nats") as server:
        pid = server.pid
        assert pid is not None and psutil.pid_exists(pid)
    assert gone(pid)
    assert server.pid is None
    with pytest.raises(RuntimeError):
        _ = server.url
    await server.stop()  # a second stop is a no-op


async def test_kill_then_restart_on_same_store_keeps_the_stream(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(store_dir=tmp_path / "nats")
    try:
        await server.start()
        nc = await nats.connect(server.url, allow_reconnect=False)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="KEEP", subjects=["keep.>"]))
        for n in range(3):
            ack = await js.publish(f"keep.{n}", f"event {n}".encode())
            assert ack.seq == n + 1
        await nc.close()

        killed_pid = server.pid
        assert killed_pid is not None
        server.kill()
        await server.start()
        assert server.pid != killed_pid
        assert gone(killed_pid)

        nc = await nats.connect(server.url, allow_reconnect=False)
        info = await nc.jetstream().stream_info("KEEP")
        await nc.close()
        assert info.state.messages == 3
        assert info.state.last_seq == 3
    finally:
        await server.stop()


async def test_restart_binds_the_previous_port(tmp_path: Path) -> None:
    """Clients keep the URL they have across a broker crash, as with a real broker."""
    server = EmbeddedNatsServer(store_dir=tmp_path / "nats")
    try:
        first_url = await server.start()
        server.kill()
        assert await server.start() == first_url
    finally:
        await server.stop()


async def test_start_failure_raises_with_the_log_and_leaves_no_process(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text(DEFAULT_CONFIG.read_text() + "\nthis is not { valid\n")
    server = EmbeddedNatsServer(store_dir=tmp_path / "nats", config_file=bad)
    with pytest.raises(NatsServerStartError, match=r"exited with 1"):
        await server.start(timeout=5)
    assert server.pid is None
    await server.stop()


async def test_with_auth_only_listed_nkeys_connect_and_a_reload_applies_a_new_user(
    tmp_path: Path,
) -> None:
    auth = NatsAuthDir(tmp_path / "nats-auth")
    server = EmbeddedNatsServer(store_dir=tmp_path / "nats", auth=auth)
    try:
        await server.start()
        assert auth.service_seed_file.stat().st_mode & 0o777 == 0o600
        assert auth.authorization_file.stat().st_mode & 0o777 == 0o600
        assert b"SU" not in auth.authorization_file.read_bytes()  # public keys only, no seed
        with pytest.raises(NatsError, match="Authorization Violation"):
            await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0)
        service = await connect([server.url], server.credentials, "test", allow_reconnect=False)
        await service.close()

        seed_file = tmp_path / "w.nk"
        seed_file.write_bytes(auth.create("w", NatsRole.worker))
        worker = NatsCredentials(seed_file=seed_file, inbox_prefix=inbox_prefix("w"))
        with pytest.raises(NatsError, match="Authorization Violation"):
            await connect([server.url], worker, "test", allow_reconnect=False)
        assert server.pid is not None and serving_pid(server.store_dir) == server.pid
        await signal_reload(server.pid, server.log_file)
        nc = await connect([server.url], worker, "test", allow_reconnect=False)
        await nc.close()
    finally:
        await server.stop()


async def test_a_reload_the_server_refuses_is_reported(tmp_path: Path) -> None:
    auth = NatsAuthDir(tmp_path / "nats-auth")
    server = EmbeddedNatsServer(store_dir=tmp_path / "nats", auth=auth)
    try:
        await server.start()
        auth.authorization_file.write_text("authorization { users = [ { nkey: not-a-key } ] }\n")
        assert server.pid is not None
        with pytest.raises(NatsServerReloadError):
            await signal_reload(server.pid, server.log_file, timeout=5)
        assert server.running  # a refused reload keeps the previous users
    finally:
        await server.stop()


async def test_the_data_folder_lock_refuses_a_second_owner_while_the_first_lives(
    tmp_path: Path,
) -> None:
    first, second = DataDirLock(tmp_path), DataDirLock(tmp_path)
    await first.acquire()
    try:
        assert not second.try_acquire()
        with pytest.raises(DataDirInUse, match=f"in use by process {os.getpid()}"):
            await second.acquire(leftover_wait_s=0.2)
    finally:
        first.release()
    assert second.try_acquire()
    second.release()
