"""Upload benchmark: one large file sent over tus as 8 parallel partial uploads plus the final
concatenation, against `jetflow serve` running as a subprocess (embedded nats-server, SQLite).

Prints the upload's MB/s next to a plain `cp` of the same file in the same run, the time spent
joining the parts, and the server's peak RSS growth (psutil, sampled every 20 ms in a thread), to
show that chunk bytes stream to disk instead of through memory. The client is httpx in this
process, streaming each part from the file in 1 MiB reads.

Run: .venv/bin/python bench/bench_upload.py [--gib 1] [--gib 2] [--parts 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import xxhash
from common import emit, load_average

JETFLOW = str(Path(sys.executable).parent / "jetflow")
MIB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until_healthy(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as http:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/api/v1/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("jetflow serve never became healthy")


class PeakRss(threading.Thread):
    """The highest resident set size of one process, sampled until stopped."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak = self.process.memory_info().rss
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            self.peak = max(self.peak, self.process.memory_info().rss)


def make_file(path: Path, size: int) -> str:
    """Random bytes (incompressible, no dedupe), and their xxh3-128 digest."""
    hasher = xxhash.xxh3_128()
    with open(path, "wb") as out:
        for _ in range(size // (16 * MIB)):
            block = os.urandom(16 * MIB)
            hasher.update(block)
            out.write(block)
    return hasher.hexdigest()


async def file_slice(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    with open(path, "rb") as source:  # noqa: ASYNC230 - the client side, reads from page cache
        source.seek(start)
        while length > 0:
            chunk = source.read(min(MIB, length))
            length -= len(chunk)
            yield chunk


async def upload_part(http: httpx.AsyncClient, path: Path, start: int, length: int) -> str:
    created = await http.post(
        "/api/v1/uploads/",
        headers={**TUS, "Upload-Length": str(length), "Upload-Concat": "partial"},
    )
    url = created.headers["Location"]
    answer = await http.patch(
        url,
        content=file_slice(path, start, length),
        headers={
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
            "Content-Length": str(length),
        },
    )
    assert answer.status_code == 204, answer.text
    return url


async def admin_key(env: dict[str, str], base: str) -> str:
    """Issue a key the way an operator does (`jetflow keys create`, which joins the service's
    embedded nats-server), then wait until the service's key read model accepts it."""
    created = await asyncio.create_subprocess_exec(
        JETFLOW, "keys", "create", "--role", "admin", "--user", "bench", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await created.communicate()
    key = out.decode().strip().splitlines()[-1]
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}) as http:
        for _ in range(100):
            if (await http.get("/api/v1/uploads/none", headers=TUS)).status_code == 404:
                return key
            await asyncio.sleep(0.1)
    raise RuntimeError("the issued API key was never accepted")


async def upload(base: str, key: str, path: Path, size: int, parts: int) -> tuple[float, float]:
    bounds = [size * i // parts for i in range(parts + 1)]
    timeout = httpx.Timeout(600.0)
    headers = {"X-API-Key": key}
    async with httpx.AsyncClient(base_url=base, timeout=timeout, headers=headers) as http:
        started = time.perf_counter()
        urls = await asyncio.gather(
            *(upload_part(http, path, a, b - a) for a, b in itertools.pairwise(bounds))
        )
        parted = time.perf_counter()
        final = await http.post(
            "/api/v1/uploads/", headers={**TUS, "Upload-Concat": "final;" + " ".join(urls)}
        )
        assert final.status_code == 201, final.text
        done = time.perf_counter()
        offset = (await http.head(final.headers["Location"], headers=TUS)).headers["Upload-Offset"]
    assert int(offset) == size, f"the final upload holds {offset} of {size} bytes"
    return parted - started, done - parted


def timed_cp(source: Path) -> float:
    copy = source.with_name("copy.bin")
    started = time.perf_counter()
    subprocess.run(["cp", str(source), str(copy)], check=True)
    elapsed = time.perf_counter() - started
    copy.unlink()
    return elapsed


async def run(
    source: Path, size: int, digest: str, cp_s: float, cp_load: tuple[float, ...], parts: int
) -> None:
    root = source.parent
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "JETFLOW_"))}
    env.update(
        JETFLOW_DATA_DIR=str(root / "data"),
        JETFLOW_PORT=str(port),
        JETFLOW_RATE_LIMIT_PER_MINUTE="1000000",
    )
    serve = await asyncio.create_subprocess_exec(
        JETFLOW, "serve", env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        await until_healthy(base)
        key = await admin_key(env, base)
        rss = PeakRss(serve.pid)
        baseline = rss.peak
        cpu_before = sum(rss.process.cpu_times()[:2])
        rss.start()
        parts_s, join_s = await upload(base, key, source, size, parts)
        rss.done.set()
        rss.join()
        cpu_s = sum(rss.process.cpu_times()[:2]) - cpu_before
    finally:
        serve.terminate()
        await serve.wait()
    blob = root / "data" / "blobs" / digest[:2] / digest
    assert blob.stat().st_size == size, "the blob store holds no copy of the source"
    mb = size / 1e6
    total_s = parts_s + join_s
    print(f"file: {size / 2**30:.0f} GiB of random bytes, {parts} partial uploads + final")
    print(f"cp of the same file      : {cp_s:6.2f} s = {mb / cp_s:7.0f} MB/s")
    print(f"tus upload, end to end   : {total_s:6.2f} s = {mb / total_s:7.0f} MB/s")
    print(f"  parts in parallel      : {parts_s:6.2f} s = {mb / parts_s:7.0f} MB/s")
    print(f"  final concatenation    : {join_s:6.2f} s = {mb / join_s:7.0f} MB/s")
    print(f"server CPU (user+system) : {cpu_s:6.2f} s")
    print(f"server RSS               : {baseline / MIB:.0f} MiB before, peak growth "
          f"{(rss.peak - baseline) / MIB:.0f} MiB")  # fmt: skip
    emit(
        "upload",
        {
            "bytes": size,
            "parts": parts,
            "cp_mbps": mb / cp_s,
            "upload_mbps": mb / total_s,
            "parts_mbps": mb / parts_s,
            "join_mbps": mb / join_s,
            "server_cpu_s": cpu_s,
            "rss_before_mib": baseline / MIB,
            "rss_peak_mib": rss.peak / MIB,
            "rss_growth_mib": (rss.peak - baseline) / MIB,
            "cp_load": cp_load,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=int, action="append", help="file size in GiB (repeatable)")
    parser.add_argument("--parts", type=int, default=8)
    args = parser.parse_args()
    work = Path(__file__).parent / ".data"
    work.mkdir(exist_ok=True)
    for gib in args.gib or [1]:
        root = Path(tempfile.mkdtemp(prefix="upload-", dir=work))
        source = root / "source.bin"
        try:
            digest = make_file(source, gib * 2**30)
            cp_s = timed_cp(source)
            cp_load = load_average()
            asyncio.run(run(source, gib * 2**30, digest, cp_s, cp_load, args.parts))
        finally:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
