"""Where submitted code runs: a bubblewrap sandbox, under the caps of the node that leased it.

A task sees nothing of the worker. It runs as an unprivileged user (uid 65534 inside; when the
worker is root it also switches to that uid outside, so no process of the sandbox is root on the
host) in its own user, mount, pid, network, ipc, uts and cgroup namespaces. Its root file system
is read-only and holds only ``/usr`` (and the interpreter's prefix when that lies elsewhere), a
fresh ``/proc`` of its own pid namespace, a minimal ``/dev``, and a private ``/tmp`` and
``/dev/shm`` (tmpfs, each at most the memory cap). Its environment is ``TASK_ENVIRONMENT`` and
nothing else. Network is a loopback of its own unless the task asked for network and the node
grants it; then it shares the host's network, loopback services included.

The caps are enforced by the kernel, not asked of the task:

- memory: ``RLIMIT_AS`` (address space) per process;
- CPU: affinity to ``ceil(cpu)`` cores, which a seccomp filter stops the task from widening, and
  ``RLIMIT_CPU`` of ``ceil(cores * timeout) + 1`` CPU seconds per process;
- processes: ``RLIMIT_NPROC`` set inside the sandbox's own user namespace. The kernel counts
  processes per user namespace, so the cap counts the sandbox's processes (threads included)
  and nobody else's, needs no privilege and no cgroup delegation, and works wherever bubblewrap
  runs; a pids cgroup would need a writable cgroup tree, which containers and CI runners often
  lack. Further user namespaces are disabled inside;
- time: the runner kills the sandbox at the timeout; bubblewrap's init dies with its parent and
  takes the whole pid namespace with it.

Deployment steps get less (``OwnProcesses``): they need the machine's files and network to build
and install, so they only get process namespaces of their own, which is what keeps the deploy
agent's environment, memory and command line out of their reach.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import platform
import resource
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SANDBOX_UID = 65534  # nobody
# Everything a task's process finds in its environment.
TASK_ENVIRONMENT = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp"}
# CPython needs roughly 30 MiB of address space to start; below this the limit is not applied.
MEMORY_FLOOR_MB = 64
# What a task granted network needs to resolve names and check certificates.
NETWORK_FILES = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/ssl",
)
ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

# Sets the caps inside the sandbox, then replaces itself with the task's interpreter. It runs
# before any submitted code, so the task starts already limited and cannot lift a hard limit.
LAUNCHER = """\
import os, resource, sys
memory, cpu_seconds, processes = (int(v) for v in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
os.execv(sys.executable, [sys.executable, "-I", "-c", sys.argv[4]])
"""


class SandboxUnavailable(RuntimeError):
    """The sandbox tool is missing or cannot create its namespaces on this machine."""


@dataclass(frozen=True)
class RunLimits:
    """The caps of one run: the task's request, already bounded by the node's own caps."""

    timeout_s: float
    cpu: float = 1.0
    memory_mb: int = 512
    processes: int = 64
    network: bool = False

    @property
    def memory_bytes(self) -> int:
        return max(self.memory_mb, MEMORY_FLOOR_MB) * 2**20

    def cores(self) -> list[int]:
        allowed = sorted(os.sched_getaffinity(0))
        return allowed[: max(1, min(len(allowed), math.ceil(self.cpu)))]

    def cpu_seconds(self) -> int:
        return math.ceil(len(self.cores()) * self.timeout_s) + 1


@dataclass(frozen=True)
class Launch:
    """How to start one run: what ``asyncio.create_subprocess_exec`` is given."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    pass_fds: tuple[int, ...]
    user: int | None  # switch to this uid and gid (no supplementary groups) before exec
    preexec: Callable[[], None]


class Sandbox(Protocol):
    def launch(self, code: str, limits: RunLimits) -> contextlib.AbstractContextManager[Launch]:
        """The command line of one run; leaving the context releases what it held."""


# ---------------------------------------------------------------- seccomp

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_EPERM = 0x00050000 | errno.EPERM
_X32_SYSCALL_BIT = 0x40000000
# machine: (AUDIT_ARCH_*, number of sched_setaffinity)
_AFFINITY_SYSCALL = {"x86_64": (0xC000003E, 203), "aarch64": (0xC00000B7, 122)}


def affinity_filter(machine: str | None = None) -> bytes | None:
    """A seccomp program refusing ``sched_setaffinity`` (EPERM) and every foreign ABI's calls,
    so the cores a task was pinned to are its cap; None where this machine's numbers are not
    known (the pinning is then only a placement)."""
    known = _AFFINITY_SYSCALL.get(machine or platform.machine())
    if known is None:
        return None
    arch, affinity = known
    checks = [(_BPF_JEQ_K, affinity)]
    if arch == 0xC000003E:  # x32 calls share the x86-64 audit arch; refuse them all
        checks.insert(0, (_BPF_JGE_K, _X32_SYSCALL_BIT))
    deny = 3 + len(checks) + 1  # index of the final "refuse"
    program = [(_BPF_LD_W_ABS, 0, 0, 4), (_BPF_JEQ_K, 0, deny - 2, arch), (_BPF_LD_W_ABS, 0, 0, 0)]
    for index, (op, value) in enumerate(checks, start=3):
        program.append((op, deny - index - 1, 0, value))
    program += [(_BPF_RET_K, 0, 0, _RET_ALLOW), (_BPF_RET_K, 0, 0, _RET_EPERM)]
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)


# ---------------------------------------------------------------- bubblewrap


class Bubblewrap:
    """Runs tasks in bubblewrap (``bwrap``, Debian package ``bubblewrap``)."""

    def __init__(
        self, binary: str = "bwrap", python: str = "/usr/bin/python3", uid: int = SANDBOX_UID
    ) -> None:
        self.binary = shutil.which(binary) or binary
        self.python = python
        self.uid = uid
        self.seccomp = affinity_filter()

    def check(self, timeout_s: float = 30.0) -> None:
        """Start one sandbox as a task would get it; raise ``SandboxUnavailable`` if it fails."""
        _require(self.binary)
        limits = RunLimits(timeout_s=timeout_s, processes=16)
        with self.launch("print('sandbox ok')", limits) as launch:
            _trial(self.binary, launch, timeout_s)

    @contextlib.contextmanager
    def launch(self, code: str, limits: RunLimits) -> Iterator[Launch]:
        fds: list[int] = []
        try:
            seccomp: list[str] = []
            if self.seccomp is not None:
                read, write = os.pipe()
                fds.append(read)
                with os.fdopen(write, "wb") as program:
                    program.write(self.seccomp)
                seccomp = ["--seccomp", str(read)]
            cores = limits.cores()
            yield Launch(
                argv=[
                    *self._command(limits),
                    *seccomp,
                    "--",
                    self.python,
                    "-I",
                    "-S",
                    "-c",
                    LAUNCHER,
                    str(limits.memory_bytes),
                    str(limits.cpu_seconds()),
                    str(limits.processes),
                    code,
                ],
                env=dict(TASK_ENVIRONMENT),
                cwd="/",
                pass_fds=tuple(fds),
                user=self.uid if os.geteuid() == 0 else None,
                preexec=lambda: os.sched_setaffinity(0, cores),
            )
        finally:
            for fd in fds:
                os.close(fd)

    def _command(self, limits: RunLimits) -> list[str]:
        size = str(limits.memory_bytes)
        workdir = f"/tmp/jetflow-task-{secrets.token_hex(4)}"
        command = [
            self.binary,
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--hostname",
            "sandbox",
            "--ro-bind",
            "/usr",
            "/usr",
            *_root_links(),
            *self._interpreter(),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            size,
            "--tmpfs",
            "/dev/shm",
            "--size",
            size,
            "--tmpfs",
            "/tmp",
            "--dir",
            workdir,
            "--chdir",
            workdir,
        ]
        if limits.network:
            command.append("--share-net")
            for path in NETWORK_FILES:
                command += ["--ro-bind-try", path, path]
        command += ["--remount-ro", "/", "--clearenv"]
        for name, value in TASK_ENVIRONMENT.items():
            command += ["--setenv", name, value]
        return command

    def _interpreter(self) -> list[str]:
        """The interpreter's installation, when it is not already under /usr."""
        prefix = Path(os.path.realpath(self.python)).parent.parent
        if prefix == Path("/usr") or Path("/usr") in prefix.parents:
            return []
        return ["--ro-bind", str(prefix), str(prefix)]


def _root_links() -> list[str]:
    """/bin, /lib, … as on the host: symlinks into /usr where the host merged them."""
    arguments = []
    for path in ROOT_LINKS:
        if os.path.islink(path):
            arguments += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            arguments += ["--ro-bind", path, path]
    return arguments


def _require(binary: str) -> None:
    if not os.access(binary, os.X_OK) or os.path.isdir(binary):
        raise SandboxUnavailable(
            f"the sandbox tool {binary!r} was not found (Debian/Ubuntu package 'bubblewrap'; "
            "./dev installs it)"
        )


def _trial(binary: str, launch: Launch, timeout_s: float) -> None:
    """Run a launch that must print ``sandbox ok``; anything else means the tool cannot run."""
    try:
        ran = subprocess.run(
            launch.argv,
            env=launch.env,
            cwd=launch.cwd,
            pass_fds=launch.pass_fds,
            user=launch.user,
            group=launch.user,
            extra_groups=[] if launch.user is not None else None,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as slow:
        raise SandboxUnavailable(f"a trial sandbox did not finish in {timeout_s} s") from slow
    if ran.returncode != 0 or ran.stdout != b"sandbox ok\n":
        said = (ran.stderr or ran.stdout).decode(errors="replace").strip()
        raise SandboxUnavailable(
            f"{binary} cannot run a sandbox here (exit {ran.returncode}): {said}"
        )


# ---------------------------------------------------------------- deployment steps


class OwnProcesses:
    """Runs a deployment step in pid and ipc namespaces of its own, with a fresh ``/proc``.

    The step sees no process outside its own, so neither the deploy agent's environment (its API
    key) nor its memory or command line; it keeps the machine's files and network, which building
    and installing a deployment needs. Orphans die with the namespace.
    """

    def __init__(self, binary: str = "bwrap") -> None:
        self.binary = shutil.which(binary) or binary

    def wrap(self, argv: list[str]) -> list[str]:
        return [
            self.binary,
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--die-with-parent",
            "--new-session",
            "--bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev-bind",
            "/dev",
            "/dev",
            "--",
            *argv,
        ]

    def check(self, timeout_s: float = 30.0) -> None:
        _require(self.binary)
        argv = self.wrap(["/bin/sh", "-c", "echo sandbox ok"])
        launch = Launch(argv, dict(TASK_ENVIRONMENT), "/", (), None, lambda: None)
        _trial(self.binary, launch, timeout_s)


class SharedProcesses:
    """``deploy-agent --unsafe-no-sandbox``: steps run beside the agent and can read it."""

    def wrap(self, argv: list[str]) -> list[str]:
        return argv


# ---------------------------------------------------------------- no sandbox


class Unconfined:
    """``--unsafe-no-sandbox``: the task runs as the worker's user with the worker's view of the
    machine; only the caps, the allow-listed environment and a scratch directory remain."""

    @contextlib.contextmanager
    def launch(self, code: str, limits: RunLimits) -> Iterator[Launch]:
        with tempfile.TemporaryDirectory(prefix="jetflow-task-") as workdir:
            cores = limits.cores()

            def limit() -> None:
                """Runs in the child between fork and exec; it must not touch the event loop."""
                memory = limits.memory_bytes
                resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
                cpu_seconds = limits.cpu_seconds()
                resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
                os.sched_setaffinity(0, cores)

            yield Launch(
                argv=[sys.executable, "-I", "-c", code],
                env={**TASK_ENVIRONMENT, "HOME": workdir, "TMPDIR": workdir},
                cwd=workdir,
                pass_fds=(),
                user=None,
                preexec=limit,
            )
