"""Finding 2 of "Trust no one": submitted code tries to break out of the real worker's sandbox.

Every test runs the real service, a real `jetflow worker` process (its key in its environment and
on its command line) and the real bubblewrap sandbox; the submitted code performs the attack and
prints what it got, which comes back as the task's result.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from adapters.nats_server import EmbeddedNatsServer
from tests.conftest import Service
from tests.security.conftest import StartWorker, stop, submit, wait_status

DONE = {"completed", "failed"}

# Each probe prints either what it read or "refused: <exception>".
PROBES = """
import glob, json, os, socket
found = {}
def attempt(name, probe):
    try:
        found[name] = probe()
    except Exception as refused:
        found[name] = f"refused: {type(refused).__name__}: {refused}"
def read(path):
    with open(path, "rb") as file:
        return file.read().decode(errors="replace")
def write(path):
    with open(path, "w") as file:
        file.write("pwned")
    return "written"
attempt("parent_environ", lambda: read(f"/proc/{os.getppid()}/environ"))
attempt("parent_cmdline", lambda: read(f"/proc/{os.getppid()}/cmdline"))
attempt("pid1_cmdline", lambda: read("/proc/1/cmdline"))
attempt("pid1_environ", lambda: read("/proc/1/environ"))
attempt("env_key", lambda: os.environ.get("JETFLOW_API_KEY", "absent"))
attempt("environ", lambda: dict(os.environ))
attempt("fernet_key", lambda: read(FERNET_KEY))
attempt("data_dir", lambda: os.listdir(DATA_DIR))
attempt("ports_files", lambda: [read(p) for p in glob.glob(NATS_DIR + "/*.ports")] or "none")
attempt("nats_dir", lambda: os.listdir(NATS_DIR))
attempt("processes", lambda: {
    pid: read(f"/proc/{pid}/cmdline") for pid in os.listdir("/proc") if pid.isdigit()
})
attempt("api_socket", lambda: socket.create_connection(("127.0.0.1", API_PORT), 3).close())
attempt("nats_socket", lambda: socket.create_connection(("127.0.0.1", NATS_PORT), 3).close())
attempt("write_usr", lambda: write(f"/usr/jetflow-pwned-{MARK}"))
attempt("write_root", lambda: write(f"/jetflow-pwned-{MARK}"))
attempt("write_etc", lambda: write(f"/etc/jetflow-pwned-{MARK}"))
attempt("write_tmp", lambda: write(f"/tmp/jetflow-ok-{MARK}"))
attempt("uid", os.getuid)
print(json.dumps(found))
"""


def probes(service: Service, nats_server: EmbeddedNatsServer, mark: str) -> str:
    settings = service.runtime.settings
    constants = {
        "MARK": mark,  # names the files this run writes, so no other run's can be mistaken
        "FERNET_KEY": str(settings.data_dir / "secret.key"),
        "DATA_DIR": str(settings.data_dir),
        "NATS_DIR": str(nats_server.store_dir),
        "API_PORT": urlsplit(service.base_url).port,
        "NATS_PORT": urlsplit(nats_server.url).port,
    }
    header = "".join(f"{name} = {value!r}\n" for name, value in constants.items())
    return header + PROBES


def refused(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("refused: ")


async def test_a_task_sees_nothing_of_the_worker(
    service: Service, nats_server: EmbeddedNatsServer, start_worker: StartWorker
) -> None:
    key = await service.key("worker", "node-probe")
    assert (service.runtime.settings.data_dir / "secret.key").exists()  # there to be stolen
    assert list(nats_server.store_dir.glob("*.ports"))
    mark = uuid.uuid4().hex
    task_id = await submit(service, {"code": probes(service, nats_server, mark), "timeout": 60})
    worker = await start_worker("node-probe", key=key)
    task = await wait_status(service, task_id, DONE)
    log = await stop(worker)
    assert task["status"] == "completed", (task, log[-2000:])
    found = json.loads(task["result"])
    key_secret = key.removeprefix("jfk_").partition("_")[2]
    assert len(key_secret) > 20

    # Nothing of the worker's key, wherever it was looked for.
    assert key_secret not in task["result"]
    assert found["env_key"] == "absent"
    assert set(found["environ"]) <= {"PATH", "LANG", "HOME", "TMPDIR", "PWD"}
    for name in ("parent_environ", "pid1_environ"):
        assert "JETFLOW" not in found[name]
    # Its own pid namespace: bubblewrap's init and the task, no worker, no service.
    assert len(found["processes"]) <= 3, found["processes"]
    seen = [found["parent_cmdline"], found["pid1_cmdline"], *found["processes"].values()]
    cmdlines = " ".join(seen).replace("\0", " ")
    for worker_word in ("--api-key", "--node-id", "node-probe", service.base_url):
        assert worker_word not in cmdlines
    # None of the machine's files: the data folder with the Fernet key, the NATS ports file.
    for name in ("fernet_key", "data_dir", "nats_dir"):
        assert "FileNotFoundError" in found[name], found[name]
    assert found["ports_files"] == "none"
    # No network: nothing listens on the sandbox's own loopback.
    for name in ("api_socket", "nats_socket"):
        assert "ConnectionRefusedError" in found[name], found[name]
    # A read-only root; only the private /tmp is writable, as an unprivileged user.
    for name in ("write_usr", "write_root"):
        assert refused(found[name]) and "Read-only file system" in found[name], found[name]
    assert refused(found["write_etc"])  # there is no /etc at all
    assert found["write_tmp"] == "written"
    assert found["uid"] == 65534
    for path in ("/usr/jetflow-pwned", "/jetflow-pwned", "/etc/jetflow-pwned", "/tmp/jetflow-ok"):
        assert not await asyncio.to_thread(Path(f"{path}-{mark}").exists)


FORK_BOMB = """
import os, time
children = 0
try:
    while children < 500:  # bounded, should the cap fail
        if os.fork() == 0:
            time.sleep(30)  # MARKER
            os._exit(0)
        children += 1
    print(f"forked {children}: not stopped")
except OSError as stopped:
    print(f"stopped after {children}: {type(stopped).__name__}")
"""


async def test_a_fork_bomb_is_stopped_by_the_process_cap(
    service: Service, start_worker: StartWorker
) -> None:
    marker = uuid.uuid4().hex
    code = FORK_BOMB.replace("MARKER", marker)
    task_id = await submit(service, {"code": code, "timeout": 60})
    worker = await start_worker("node-bomb", "--max-processes", "24")
    task = await wait_status(service, task_id, DONE)
    await stop(worker)
    assert task["status"] == "completed", task
    result = task["result"].strip()
    assert result.startswith("stopped after") and result.endswith("BlockingIOError"), result
    children = int(result.split()[2].rstrip(":"))
    assert 0 < children < 24
    # The children went with the sandbox: none is left on the host.
    await asyncio.sleep(0.2)
    left = [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if marker in " ".join(p.info["cmdline"] or ()) and p.info["status"] != "zombie"
    ]
    assert not left


MEMORY_HOG = """
import resource
found = []
try:
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    found.append("raised its own limit")
except (ValueError, OSError) as refused:
    found.append(f"limit stays: {type(refused).__name__}")
try:
    with open("/tmp/hog", "wb") as file:
        for _ in range(512):
            file.write(b"x" * 2**20)
    found.append("wrote 512 MiB to /tmp")
except OSError as full:
    found.append(f"/tmp full: {full.strerror}")
try:
    hog = bytearray(512 * 2**20)
    found.append("allocated 512 MiB")
except MemoryError:
    found.append("allocation refused: MemoryError")
print("; ".join(found))
"""


async def test_memory_beyond_the_node_cap_is_refused(
    service: Service, start_worker: StartWorker
) -> None:
    task_id = await submit(
        service, {"code": MEMORY_HOG, "timeout": 60, "resources": {"cpu": 1, "memory": 200}}
    )
    worker = await start_worker("node-small", "--memory-mb", "256")
    task = await wait_status(service, task_id, DONE)
    await stop(worker)
    assert task["status"] == "completed", task
    assert task["result"] == (
        "limit stays: ValueError; /tmp full: No space left on device; "
        "allocation refused: MemoryError\n"
    )


async def test_a_task_larger_than_the_offer_is_not_leased_to_that_node(
    service: Service, start_worker: StartWorker
) -> None:
    huge = await submit(  # what the finding's submitter asked for
        service, {"code": "print('huge')", "resources": {"cpu": 256, "memory": 1_048_576}}
    )
    long = await submit(service, {"code": "print('long')", "timeout": 3600})
    online = await submit(
        service, {"code": "print('online')", "network": True, "resources": {"memory": 128}}
    )
    fitting = await submit(service, {"code": "print('fits')", "resources": {"memory": 128}})
    worker = await start_worker(
        "node-offer", "--cpu", "1", "--memory-mb", "256", "--max-timeout-s", "600"
    )
    done = await wait_status(service, fitting, DONE)
    assert done["status"] == "completed" and done["result"] == "fits\n"
    await asyncio.sleep(1.0)  # ten more polls of the queue
    await stop(worker)
    for task_id in (huge, long, online):
        task = (await service.http.get(f"/tasks/{task_id}")).json()
        assert task["status"] == "pending" and task["node_id"] is None, task
        assert task["attempt"] == 0

    # The aggregate refuses it too, whatever a node asks for through the API.
    node = await service.client_as("worker", "node-direct")
    offer = {"cpu": 1, "memory": 256, "timeout": 600, "network": False}
    assert (await node.post("/nodes/node-direct/lease", json=offer)).status_code == 204
    granted = await node.post("/nodes/node-direct/lease", json={**offer, "network": True})
    assert granted.status_code == 200 and granted.json()["task_id"] == online
    assert granted.json()["network"] is True


async def test_network_only_when_the_task_asks_and_the_node_grants_it(
    service: Service, start_worker: StartWorker
) -> None:
    port = urlsplit(service.base_url).port
    code = (
        "import socket\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), 3).close()\n"
        "    print('connected')\n"
        "except OSError as refused:\n    print(type(refused).__name__)\n"
    )
    asked = await submit(service, {"code": code, "network": True})
    not_asked = await submit(service, {"code": code})
    worker = await start_worker("node-net", "--allow-network")
    with_network = await wait_status(service, asked, DONE)
    without = await wait_status(service, not_asked, DONE)
    await stop(worker)
    assert with_network["result"] == "connected\n"
    assert without["result"] == "ConnectionRefusedError\n"


async def test_cpu_affinity_cannot_be_widened(service: Service, start_worker: StartWorker) -> None:
    code = (
        "import os\n"
        "pinned = sorted(os.sched_getaffinity(0))\n"
        "try:\n    os.sched_setaffinity(0, range(os.cpu_count()))\n    widened = 'widened'\n"
        "except OSError as refused:\n    widened = type(refused).__name__\n"
        "print(len(pinned), widened)\n"
    )
    task_id = await submit(service, {"code": code, "resources": {"cpu": 1}})
    worker = await start_worker("node-cpu", "--cpu", "1")
    task = await wait_status(service, task_id, DONE)
    await stop(worker)
    assert task["result"] == "1 PermissionError\n", task


async def test_the_worker_refuses_to_start_without_its_sandbox(
    service: Service, start_worker: StartWorker
) -> None:
    missing = "/nonexistent/bwrap"
    refusing = await start_worker("node-nobox", "--sandbox-bin", missing)
    _, stderr = await asyncio.wait_for(refusing.communicate(), 60)
    assert refusing.returncode == 2
    said = stderr.decode()
    assert "refusing to start" in said and missing in said and "--unsafe-no-sandbox" in said

    task_id = await submit(service, {"code": "print('ran unconfined')"})
    unsafe = await start_worker("node-unsafe", "--sandbox-bin", missing, "--unsafe-no-sandbox")
    task = await wait_status(service, task_id, DONE)
    log = await stop(unsafe)
    assert task["result"] == "ran unconfined\n"
    assert "CRITICAL" in log and "UNSAFE" in log and "WITHOUT A SANDBOX" in log
