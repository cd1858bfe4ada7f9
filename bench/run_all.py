"""Run every benchmark and write bench/results.md: each figure beside its physical-limit reference
measured in the same run on this machine, as a ratio, with the load average and the commit.

Each benchmark runs as its own process (so one's memory and threads cannot skew the next) and
prints its figures as usual plus one `BENCH_RESULT {json}` line, which this script collects.

Run: .venv/bin/python bench/run_all.py [--events 1000000] [--foundation-events 20000]
     [--rate 1000] [--duration 60] [--get-rate 500] [--get-duration 30] [--gib 1]
     [--webhook-rate 20] [--webhook-duration 30] [--only replay,latency] [--out bench/results.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import RESULT_PREFIX, load_average

BENCH = Path(__file__).parent
ROOT = BENCH.parent
PYTHON = sys.executable


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def run(script: str, *args: str) -> dict[str, Any]:
    """Run one benchmark, echo its output, return its BENCH_RESULT figures."""
    command = [PYTHON, str(BENCH / script), *args]
    print(f"\n$ {' '.join(command[1:])}   (load {load_average()})", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    print(done.stdout, end="")
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{script} failed with exit code {done.returncode}")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    figures = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    figures["wall_s"] = time.perf_counter() - started
    figures["output"] = [ln for ln in done.stdout.splitlines() if not ln.startswith(RESULT_PREFIX)]
    return figures


def dirty_paths(porcelain: str) -> str:
    """The changed paths, so a reader sees whether service code or only bench/ differed."""
    paths = [line[3:] for line in porcelain.splitlines()]
    return ", ".join(f"`{p}`" for p in paths) if paths else "nothing"


def fmt_load(load: Any) -> str:
    return " / ".join(f"{v:.2f}" for v in load)


def ratio_row(what: str, value: str, reference: str, ratio: float, target: str, load: Any) -> str:
    return f"| {what} | {value} | {reference} | {ratio:.0%} | {target} | {fmt_load(load)} |"


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def write(path: Path, results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run_all.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- commit: `{commit}`"
        + (" — **working tree dirty** (uncommitted changes, see `git status`)" if dirty else ""),
        f"- uncommitted at the start of the run: {dirty_paths(args.dirty_at_start)}",
        f"- machine: {os.cpu_count()} cores, {platform.platform()}, Python "
        f"{platform.python_version()}; shared with other work, so every figure carries the "
        "1/5/15-minute load average taken right after it was measured",
        f"- command: `.venv/bin/python bench/run_all.py {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        "| what | figure | physical-limit reference (same run) | ratio | target | load 1/5/15 |",
        "| --- | ---: | --- | ---: | --- | --- |",
    ]
    targets: list[str] = []
    if f := results.get("foundation"):
        cmd = f["command_path_eps"] / f["raw_publish_eps"]
        proj = f["projector_eps"] / f["raw_sqlite_rps"]
        lines.append(ratio_row(
            f"command path append (`SubmitTask`, {f['events']:,} events, 1,000 in flight)",
            f"{f['command_path_eps']:,.0f} events/s",
            f"raw nats-py `publish_async`, {f['raw_publish_eps']:,.0f} events/s",
            cmd, "≥ 50%", f["loads"]["command_path"],
        ))  # fmt: skip
        lines.append(ratio_row(
            "projection apply (durable consumer, 500-event transactions)",
            f"{f['projector_eps']:,.0f} events/s",
            f"raw SQLite `executemany`, {f['raw_sqlite_rps']:,.0f} rows/s",
            proj, "≥ 50%", f["loads"]["projector"],
        ))  # fmt: skip
        targets += [
            f"- append ≥ 50% of raw publish: {verdict(cmd >= 0.5)} ({cmd:.0%})",
            f"- projection ≥ 50% of raw SQLite: {verdict(proj >= 0.5)} ({proj:.0%})",
        ]
    if r := results.get("replay"):
        if "es_replay_eps" in r:
            ratio = r["replay_ratio"]
            lines.append(
                f"| replay of {r['events']:,} events into a fresh tasks projection "
                f"(`handlers.projector.rebuild`) | {r['jetflow_replay_eps']:,.0f} events/s "
                f"({r['jetflow_replay_s']:.0f} s) | `eventsourcing` "
                f"{r.get('es_version', '9.x')} Projection on SQLite, "
                f"{r['es_replay_eps']:,.0f} events/s ({r['es_replay_s']:.0f} s) | {ratio:.2f}x "
                f"| ≥ 3x | {fmt_load(r['jetflow_replay_load'])} (eventsourcing: "
                f"{fmt_load(r['es_replay_load'])}) |"
            )
            lines.append(
                f"| loading those events (jetflow: raw publish of encoded envelopes; "
                f"eventsourcing: `save` of 1,000 aggregates) | {r['jetflow_append_eps']:,.0f} "
                f"events/s | eventsourcing {r['es_append_eps']:,.0f} events/s | "
                f"{r['jetflow_append_eps'] / r['es_append_eps']:.2f}x | — | "
                f"{fmt_load(r['jetflow_append_load'])} |"
            )
            targets.append(f"- replay ≥ 3x eventsourcing: {verdict(ratio >= 3)} ({ratio:.2f}x)")
    for key in sorted(k for k in results if k.startswith("latency")):
        lat = results[key]
        p, a = lat["projection_ms"], lat["post_answer_ms"]
        sustained = lat["post_achieved_per_s"] >= 0.95 * lat["rate"]
        tried = lat.get("experiments") or []
        label = f" — **experiment** `{' + '.join(tried)}` (bench-only, see notes)" if tried else ""
        lines.append(
            f"| command→projection latency{label}, open loop POST /api/v1/tasks at "
            f"{lat['rate']:,.0f}/s "
            f"for {lat['duration_s']:.0f} s (achieved {lat['post_achieved_per_s']:,.0f}/s, "
            f"{lat['posts_failed']} failed) | p50 {p['p50']:,.1f} / p95 {p['p95']:,.1f} / "
            f"p99 {p['p99']:,.1f} ms | POST answer itself: p50 {a['p50']:,.1f} / p99 "
            f"{a['p99']:,.1f} ms | — | p99 < 50 ms at 1k/s | {fmt_load(lat['post_load'])} |"
        )
        if "get_ms" in lat:
            g = lat["get_ms"]
            lines.append(
                f"| GET /api/v1/tasks/{{id}}{label}, open loop at {lat['get_rate']:,.0f}/s for "
                f"{lat['get_duration_s']:.0f} s (achieved {lat['get_achieved_per_s']:,.0f}/s) | "
                f"p50 {g['p50']:,.1f} / p99 {g['p99']:,.1f} ms | — | — | — | "
                f"{fmt_load(lat['get_load'])} |"
            )
        if lat["rate"] >= 1000 and not tried:
            met = sustained and p["p99"] < 50
            targets.append(
                f"- p99 < 50 ms at 1k cmd/s: {verdict(met)} (achieved "
                f"{lat['post_achieved_per_s']:,.0f}/s, p99 {p['p99']:,.0f} ms)"
            )
    if u := results.get("upload"):
        lines.append(ratio_row(
            f"tus upload of {u['bytes'] / 2**30:.0f} GiB, {u['parts']} parallel parts + final "
            f"concatenation (server peak RSS {u['rss_peak_mib']:.0f} MiB, growth "
            f"{u['rss_growth_mib']:.0f} MiB)",
            f"{u['upload_mbps']:,.0f} MB/s (parts {u['parts_mbps']:,.0f}, join "
            f"{u['join_mbps']:,.0f})",
            f"`cp` of the same file, {u['cp_mbps']:,.0f} MB/s",
            u["upload_mbps"] / u["cp_mbps"], "—", u["load"],
        ))  # fmt: skip
    if w := results.get("webhooks"):
        lat, ref = w["latency_ms"], w["reference_ms"]
        delivered = w["delivered"] == w["healthy_tasks"]
        figure = (
            f"p50 {lat['p50']:,.0f} / p95 {lat['p95']:,.0f} / p99 {lat['p99']:,.0f} ms"
            if w["delivered"]
            else "none delivered"
        )
        lines.append(
            f"| webhook delivery to {w['healthy_endpoints']} healthy endpoints while 1 hangs "
            f"(open loop {w['rate']:,.0f} tasks/s for {w['duration_s']:.0f} s, every "
            f"{w['hanging_every']}th to the hanging one; {w['delivered']:,} of "
            f"{w['healthy_tasks']:,} delivered within {w['drain_s']:.0f} s) | {figure} | plain "
            f"httpx POST to the same receivers: p50 {ref['p50']:,.1f} / p99 {ref['p99']:,.1f} ms "
            f"| — | healthy p99 < 1 s | {fmt_load(w['load'])} |"
        )
        met = delivered and lat["p99"] < 1000
        targets.append(
            f"- healthy webhook p99 < 1 s with one endpoint hanging: {verdict(met)} "
            f"({w['delivered']:,} of {w['healthy_tasks']:,} delivered"
            + (f", p99 {lat['p99']:,.0f} ms)" if w["delivered"] else ")")
        )
    lines += ["", "## Targets", "", *targets, ""]
    notes = BENCH / "results_notes.md"
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    lines += ["## Raw output", ""]
    for name, figures in results.items():
        lines += [
            f"### {name} ({figures['wall_s']:.0f} s)",
            "",
            "```",
            *figures["output"],
            "```",
            "",
        ]
    path.write_text("\n".join(lines))
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000, help="replay benchmark size")
    parser.add_argument("--foundation-events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--get-rate", type=float, default=500)
    parser.add_argument("--get-duration", type=float, default=30)
    parser.add_argument("--low-rate", type=float, default=250, help="second, unsaturated pass")
    parser.add_argument("--gib", type=int, default=1)
    parser.add_argument(
        "--no-experiments",
        dest="experiments",
        action="store_false",
        help="skip the latency passes with bench-only experiments (o1-rate-limit, split)",
    )
    parser.add_argument("--webhook-rate", type=float, default=20)
    parser.add_argument("--webhook-duration", type=float, default=30)
    parser.add_argument(
        "--only", help="comma-separated subset: foundation,replay,latency,upload,webhooks"
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results.md")
    args = parser.parse_args()
    args.dirty_at_start = git("status", "--porcelain")
    wanted = (
        set(args.only.split(","))
        if args.only
        else {"foundation", "replay", "latency", "upload", "webhooks"}
    )
    results: dict[str, dict[str, Any]] = {}
    if "foundation" in wanted:
        results["foundation"] = run("bench_foundation.py", "--events", str(args.foundation_events))
    if "replay" in wanted:
        results["replay"] = run("bench_replay.py", "--events", str(args.events))
    if "latency" in wanted:
        results["latency"] = run(
            "bench_latency.py", "--rate", str(args.rate), "--duration", str(args.duration),
            "--get-rate", str(args.get_rate), "--get-duration", str(args.get_duration),
        )  # fmt: skip
        for name, tried in (
            ("latency_x_o1", ["o1-rate-limit"]),
            ("latency_x_o1_split", ["o1-rate-limit", "split-projectors"]),
        ):
            if not args.experiments:
                break
            flags = [arg for t in tried for arg in ("--experiment", t)]
            results[name] = run(
                "bench_latency.py", "--rate", str(args.rate), "--duration", "30",
                "--get-rate", str(args.get_rate), "--get-duration", "15", *flags,
            )  # fmt: skip
        if args.low_rate:
            results["latency_low"] = run(
                "bench_latency.py", "--rate", str(args.low_rate), "--duration", "30",
                "--get-duration", "0",
            )  # fmt: skip
    if "upload" in wanted:
        results["upload"] = run("bench_upload.py", "--gib", str(args.gib))
    if "webhooks" in wanted:
        results["webhooks"] = run(
            "bench_webhooks.py", "--rate", str(args.webhook_rate),
            "--duration", str(args.webhook_duration),
        )  # fmt: skip
    write(args.out, results, args)


if __name__ == "__main__":
    main()
