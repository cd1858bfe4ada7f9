"""The sandbox flags the worker and the deploy agent share, and their refusal to run without one.

Without a sandbox that runs, hostile code (a task, a deployment's install or steps) could read
the process's key and the machine's files, so neither starts unless told ``--unsafe-no-sandbox``,
and then it says so loudly.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Protocol, TypeVar

from adapters.sandbox import SandboxUnavailable

log = logging.getLogger("jetflow.sandbox")


class Checkable(Protocol):
    binary: str

    def check(self, timeout_s: float = ...) -> None: ...


Safe = TypeVar("Safe", bound=Checkable)
Unsafe = TypeVar("Unsafe")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    box = parser.add_argument_group("sandbox")
    box.add_argument(
        "--sandbox-bin",
        default=os.environ.get("JETFLOW_SANDBOX_BIN", "bwrap"),
        help="bubblewrap binary (JETFLOW_SANDBOX_BIN, default bwrap)",
    )
    box.add_argument(
        "--unsafe-no-sandbox", action="store_true", help="run unisolated (never in production)"
    )


def checked(
    safe: Safe, unsafe: Unsafe, args: argparse.Namespace, runs: str
) -> Safe | Unsafe | None:
    """``safe`` if it runs here; ``unsafe`` when told so; None (refuse to start) otherwise.
    ``runs`` names what the sandbox holds, for the messages."""
    if args.unsafe_no_sandbox:
        for _ in range(3):  # hard to miss in a scrolling log
            log.critical(
                "UNSAFE: --unsafe-no-sandbox: %s run WITHOUT A SANDBOX, as this process's user, "
                "and can read its environment (API key included), its files and every process it "
                "can see, and reach the network. Use it only where all of it is trusted.",
                runs,
            )
        return unsafe
    try:
        safe.check()
    except SandboxUnavailable as cannot:
        log.critical(
            "refusing to start: %s. Without a sandbox, %s could read this process's key and "
            "files; install bubblewrap (./dev does), point --sandbox-bin at it, or pass "
            "--unsafe-no-sandbox to run them unisolated.",
            cannot,
            runs,
        )
        return None
    log.info("%s run in %s", runs, safe.binary)
    return safe
