"""Top frames of a py-spy profile (``py-spy record --format raw``: collapsed stacks).

Prints the frames where the samples were taken (self) and the frames the samples passed through
(inclusive), optionally only for stacks that pass through a given function, e.g. ``rebuild``, so
the loading phase of a benchmark does not hide the phase being studied.

Run: .venv/bin/python bench/profile_top.py PROFILE.txt [--within rebuild] [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LOCATION = re.compile(r" \((?:.*/)?(?:site-packages/)?([^()]*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """``apply_batch (projections/base.py:70)`` -> ``apply_batch (projections/base.py)``."""
    match = _LOCATION.search(frame)
    if match is None:
        return frame
    path = frame[match.start(1) : match.end(1)]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{frame[: match.start()]} ({short})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--within", help="keep only stacks through a frame containing this")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    own: Counter[str] = Counter()
    through: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        if args.within and not any(args.within in f for f in frames):
            continue
        count = int(count_text)
        total += count
        named = [frame_name(f) for f in frames]
        own[named[-1]] += count
        for name in set(named):
            through[name] += count
    print(f"{total} samples" + (f" through {args.within!r}" if args.within else ""))
    print("\nself (where the samples were taken):")
    for name, count in own.most_common(args.top):
        print(f"{count / total:6.1%}  {name}")
    print("\ninclusive (frames the samples passed through):")
    for name, count in through.most_common(args.top):
        print(f"{count / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
