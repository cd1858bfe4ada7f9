"""What every fault test needs: a `jetflow serve` it can SIGKILL, clients that keep their
Idempotency-Key across retries, a scan of the stream with its headers, and row checksums.

The proofs are made from the outside, as an operator would: the stream is read message by message
(``Nats-Msg-Id`` tells which client key each event came from) and the projection database is
compared with the one ``jetflow replay`` builds from the same stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from nats.aio.client import Client
from nats.aio.msg import Msg

from adapters.event_store import servers
from adapters.nats_auth import NatsCredentials, connect
from projections.base import checkpoints
from slices.catalogue import CATALOGUE
from tests.conftest import free_port

JETFLOW = str(Path(sys.executable).parent / "jetflow")
REPO = Path(__file__).resolve().parents[2]
# A resend is recognised per sender: the message id is "<command>:<actor>:<client key>".
SUBMIT_SCOPE = "task.SubmitTask:user:faults:"
DB_NAME = "projections.db"


def service_env(
    nats_url: str, stream: str, data_dir: Path, port: int, **extra: str
) -> dict[str, str]:
    """The environment of one `jetflow serve`: nothing inherited from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "JETFLOW_"))}
    env.update(
        NATS_URL=nats_url,
        JETFLOW_STREAM=stream,
        JETFLOW_DATA_DIR=str(data_dir),
        JETFLOW_PORT=str(port),
        # The clients are one admin key sending thousands of commands a minute on purpose.
        JETFLOW_RATE_LIMIT_PER_MINUTE="100000000",
        **extra,
    )
    return env


@dataclass
class ServeProcess:
    """`jetflow serve` as a child process that can be SIGKILLed and started again on the same
    port and data, the way a supervisor restarts a crashed service."""

    env: dict[str, str]
    log_path: Path
    argv: tuple[str, ...] = (JETFLOW, "serve")
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    api_key: str | None = None

    @classmethod
    def for_stream(
        cls, nats_url: str, stream: str, data_dir: Path, *, argv: tuple[str, ...] | None = None
    ) -> ServeProcess:
        env = service_env(nats_url, stream, data_dir, free_port())
        return cls(env, data_dir / "serve.log", argv or (JETFLOW, "serve"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['JETFLOW_PORT']}"

    async def issue_key(self) -> str:
        """An admin key from `jetflow keys create`, run by the same program as the service;
        the service accepts it once its api_keys projection holds it (``start`` waits)."""
        keys = await asyncio.create_subprocess_exec(
            *self.argv[:-1],
            "keys",
            "create",
            "--role",
            "admin",
            "--user",
            "faults",
            env=self.env,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(keys.communicate(), 60)
        assert keys.returncode == 0, err.decode(errors="replace")[-2000:]
        self.api_key = out.decode().split()[-1]
        return self.api_key

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key} if self.api_key else {}

    async def start(self, timeout: float = 60.0) -> None:
        """Start and wait until /health answers 200 (the stream, the database and every
        projection consumer are there) and the API key, if any, is accepted."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A file, not a pipe: uvicorn logs every request, and a full pipe would stall the service.
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts + 1} =====\n".encode())
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, cwd=REPO, stdout=log, stderr=log
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as http:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"jetflow serve exited with {self.process.returncode}\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if await self._ready(http):
                        return
                await asyncio.sleep(0.1)
        raise AssertionError(f"jetflow serve not healthy within {timeout}s\n{self.log_tail()}")

    async def _ready(self, http: httpx.AsyncClient) -> bool:
        if (await http.get("/api/v1/health")).status_code != 200:
            return False
        if self.api_key is None:
            return True
        return (await http.get("/api/v1/stats", headers=self.headers)).status_code == 200

    async def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, no batch is finished, no answer is sent."""
        assert self.process is not None and self.process.returncode is None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the graceful shutdown; SIGKILL if it does not come."""
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.returncode is not None:
            return process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"jetflow serve ignored SIGTERM\n{self.log_tail()}") from None

    async def reap(self) -> None:
        """After a failed test: no service may outlive it."""
        if self.process is not None and self.process.returncode is None:
            await self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def caught_up(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until every projection consumer has nothing pending or unacknowledged; a
        projector stuck after a restart fails here, with its health report."""
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):
                    answer = await http.get("/api/v1/health")
                    body = answer.json()
                    lags = body.get("components", {}).get("projections", {})
                    if (
                        answer.status_code == 200
                        and lags
                        and all(p["lag_events"] == 0 for p in lags.values())
                    ):
                        return body
                await asyncio.sleep(0.2)
        raise ProjectorStuck(f"projections did not catch up within {timeout}s: {body}")


class ProjectorStuck(AssertionError):
    """A projection consumer still had pending events when the wait for catch-up ran out."""


# ---------------------------------------------------------------------- the clients


@dataclass(frozen=True)
class Answer:
    task_id: str
    seq: int
    attempts: int
    at: float


@dataclass
class CommandLoad:
    """``count`` task submissions, ``concurrency`` at a time, each with its own Idempotency-Key.

    A request without an answer (connection refused or cut, a 5xx, ``duplicate_in_flight``) is
    sent again with the same key until it is answered: that is the client half of "acknowledged
    exactly once". Any other answer than 202 is a refusal and fails the test.
    """

    base_url: str
    api_key: str | None
    count: int
    concurrency: int = 50
    prefix: str = "fault"
    timeout_s: float = 20.0
    answers: dict[str, Answer] = field(default_factory=dict)
    unanswered: Counter[str] = field(default_factory=Counter)  # key -> failed attempts
    failures: Counter[str] = field(default_factory=Counter)  # kind of failure -> how many
    refusals: list[tuple[str, int, str]] = field(default_factory=list)
    in_flight: int = 0
    started: int = 0

    @property
    def keys(self) -> list[str]:
        return [f"{self.prefix}-{i:05d}" for i in range(self.count)]

    @property
    def answered(self) -> int:
        return len(self.answers)

    async def run(self, deadline_s: float = 120.0) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        for key in self.keys:
            queue.put_nowait(key)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.concurrency)]
        try:
            await asyncio.wait_for(asyncio.gather(*workers), deadline_s)
        except TimeoutError:
            missing = self.count - self.answered
            raise AssertionError(
                f"{missing} commands still unanswered after {deadline_s}s "
                f"(failures: {dict(self.failures)})"
            ) from None

    async def _worker(self, queue: asyncio.Queue[str]) -> None:
        """One connection per worker, like one client each: a single httpx pool shared by 50
        callers spends more CPU on its own bookkeeping than the service spends per command."""
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(
            base_url=f"{self.base_url}/api/v1", timeout=self.timeout_s, limits=limits
        ) as http:
            while not queue.empty():
                key = queue.get_nowait()
                self.started += 1
                await self._until_answered(http, key)

    async def _until_answered(self, http: httpx.AsyncClient, key: str) -> None:
        attempt = 0
        while True:
            attempt += 1
            self.in_flight += 1
            try:
                answer = await http.post(
                    "/tasks",
                    json={"code": f"print({key!r})"},
                    headers={
                        "X-API-Key": self.api_key or "",
                        "Idempotency-Key": key,
                        "X-Correlation-Id": key,
                    },
                )
            except httpx.TransportError as error:
                self._lost(key, type(error).__name__)
                await asyncio.sleep(0.1)
                continue
            finally:
                self.in_flight -= 1
            if answer.status_code == 202:
                body = answer.json()
                self.answers[key] = Answer(body["task_id"], body["seq"], attempt, time.monotonic())
                return
            code = _error_code(answer)
            if answer.status_code >= 500 or code == "duplicate_in_flight":
                self._lost(key, f"{answer.status_code} {code}")
                await asyncio.sleep(0.1)
                continue
            self.refusals.append((key, answer.status_code, answer.text[:200]))
            return

    def _lost(self, key: str, kind: str) -> None:
        self.unanswered[key] += 1
        self.failures[kind] += 1

    async def until_answered(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.answered < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.answered} of {count} answers in {timeout}s")
            await asyncio.sleep(0.005)

    def answered_between(self, start: float, end: float) -> int:
        return sum(1 for a in self.answers.values() if start <= a.at <= end)


@contextlib.asynccontextmanager
async def sending(
    load: CommandLoad, deadline_s: float = 120.0
) -> AsyncIterator[asyncio.Task[None]]:
    """The clients run in the background of a fault; a failed test does not leave them running."""
    task = asyncio.create_task(load.run(deadline_s))
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _error_code(answer: httpx.Response) -> str:
    try:
        return str(answer.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


# ---------------------------------------------------------------------- the stream


@dataclass(frozen=True)
class StoredMessage:
    seq: int
    subject: str
    msg_id: str | None
    body: dict[str, Any]


async def scan_stream(
    nats_url: str,
    stream: str,
    subjects: str = "ev.>",
    credentials: NatsCredentials | None = None,
) -> list[StoredMessage]:
    """Every stored message with its headers, read with batched direct gets (no consumer, so
    the scan changes nothing in the system it inspects)."""
    nc = await connect(servers(nats_url), credentials, "fault-test-scan")
    messages: list[StoredMessage] = []
    try:
        start = 1
        while True:
            page, pending = await _direct_page(nc, stream, subjects, start)
            messages.extend(page)
            if not page or pending == 0:
                return messages
            start = page[-1].seq + 1
    finally:
        await nc.close()


async def _direct_page(
    nc: Client, stream: str, subjects: str, start: int
) -> tuple[list[StoredMessage], int]:
    done: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    page: list[StoredMessage] = []

    async def receive(msg: Msg) -> None:
        headers = msg.headers or {}
        if (status := headers.get("Status")) is None:
            page.append(
                StoredMessage(
                    int(headers["Nats-Sequence"]),
                    headers["Nats-Subject"],
                    headers.get("Nats-Msg-Id"),
                    json.loads(msg.data),
                )
            )
        elif not done.done():
            done.set_result((status, int(headers.get("Nats-Num-Pending", 0))))

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=receive)
    try:
        request = {"seq": start, "next_by_subj": subjects, "batch": 1000}
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=inbox)
        status, pending = await asyncio.wait_for(done, 10)
    finally:
        await sub.unsubscribe()
    if status == "404":
        return [], 0
    assert status == "204", f"direct get answered {status}"
    return page, pending


@dataclass(frozen=True)
class ExactlyOnce:
    """What the stream says about the submissions: one TaskSubmitted per client key."""

    submitted: int
    keys: int
    retried_keys: int


def assert_exactly_once(load: CommandLoad, messages: Iterable[StoredMessage]) -> ExactlyOnce:
    """Every key a client sent is in the stream exactly once, under the task id and sequence
    the service answered; nothing is in the stream that no client sent."""
    assert load.refusals == [], load.refusals[:5]
    assert sorted(load.answers) == load.keys, "some command never got an answer"
    by_key: dict[str, list[StoredMessage]] = defaultdict(list)
    submitted = [m for m in messages if m.subject.endswith(".TaskSubmitted")]
    for message in submitted:
        assert message.msg_id is not None and message.msg_id.startswith(SUBMIT_SCOPE), message
        by_key[message.msg_id.removeprefix(SUBMIT_SCOPE)].append(message)
    duplicates = {key: [m.seq for m in found] for key, found in by_key.items() if len(found) > 1}
    assert duplicates == {}, f"appended more than once: {list(duplicates.items())[:5]}"
    assert sorted(by_key) == load.keys, "the stream's submissions differ from the clients' keys"
    for key, answer in load.answers.items():
        (stored,) = by_key[key]
        assert (stored.seq, stored.body["aggregate_id"]) == (answer.seq, answer.task_id), key
        assert stored.body["correlation_id"] == key
    task_ids = Counter(m.body["aggregate_id"] for m in submitted)
    assert task_ids.most_common(1)[0][1] == 1
    return ExactlyOnce(len(submitted), len(by_key), len(load.unanswered))


# ---------------------------------------------------------------------- the projections


def projection_tables() -> list[tuple[str, list[str]]]:
    """Every projection table and the checkpoints, with the primary key that orders its rows."""
    tables = [table for projection in CATALOGUE.projections for table in projection.tables]
    tables.append(checkpoints)
    return [(t.name, [c.name for c in t.primary_key.columns]) for t in tables]


def dump_rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every projection table, in primary-key order, read with plain sqlite3."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for name, key in projection_tables():
            order = ", ".join(f'"{column}"' for column in key)
            rows[name] = list(connection.execute(f'SELECT * FROM "{name}" ORDER BY {order}'))
    finally:
        connection.close()
    return rows


def checksums(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, tuple[int, str]]:
    """Per table: the row count and a SHA-256 over the rows' text, the figures a report shows."""
    return {
        name: (len(table), hashlib.sha256(repr(table).encode()).hexdigest()[:16])
        for name, table in rows.items()
    }


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy through SQLite's backup API (the WAL is folded in)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


async def replay_into_copy(serve: ServeProcess, copy_dir: Path) -> Path:
    """`jetflow replay` on a copy of the service's database (service stopped): the clean
    rebuild from sequence 1 that the live rows must equal. The same program as the service
    runs it (``serve`` swapped for ``replay``), so a launcher's settings hold for both."""
    live_db = Path(serve.env["JETFLOW_DATA_DIR"]) / DB_NAME
    copy_database(live_db, copy_dir / DB_NAME)
    env = {**serve.env, "JETFLOW_DATA_DIR": str(copy_dir)}
    replay = await asyncio.create_subprocess_exec(
        *serve.argv[:-1],
        "replay",
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(replay.communicate(), 120)
    assert replay.returncode == 0, out.decode(errors="replace")[-3000:]
    return copy_dir / DB_NAME


def checkpoint_of(db: Path, projection: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        row = connection.execute(
            "SELECT seq FROM projection_checkpoints WHERE name = ?", (projection,)
        ).fetchone()
    return int(row[0]) if row else 0


async def when(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
