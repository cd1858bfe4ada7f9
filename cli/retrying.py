"""The retry flags the worker, the render nodes and the deploy agent share (``clients.polling``).

The defaults suit a service that restarts or sheds load for seconds; a test or a supervisor that
wants quicker retries lowers them.
"""

from __future__ import annotations

import argparse
import math

from clients.polling import Backoff


def _seconds(value: str) -> float:
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Backoff()
    retry = parser.add_argument_group(
        "retries", "429, 502/503/504 and lost connections are retried until stopped"
    )
    retry.add_argument(
        "--retry-initial",
        type=_seconds,
        default=defaults.initial_s,
        help=f"seconds before the first retry, doubling each time (default {defaults.initial_s})",
    )
    retry.add_argument(
        "--retry-max",
        type=_seconds,
        default=defaults.max_s,
        help=f"the longest wait between retries (default {defaults.max_s})",
    )


def backoff(args: argparse.Namespace) -> Backoff:
    try:
        return Backoff(args.retry_initial, args.retry_max)
    except ValueError:
        raise SystemExit("jetflow: --retry-initial must not exceed --retry-max") from None
