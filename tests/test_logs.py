"""Structured logs (issue 17): `jetflow serve` as a child process writing its log to a file (not
a terminal, so JSON), driven over real HTTP with every kind of secret the service handles: API
keys in headers and in ``?token=``, a JWT, a refer key in a download URL, a webhook secret and
the secret key. Every line must parse as JSON, name its request and actor, and hold no secret.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.fernet import Fernet

from adapters import log_context
from adapters.nats_server import EmbeddedNatsServer
from api import logs
from api.settings import Settings
from tests.conftest import delete_stream, free_port
from tests.faults.harness import ServeProcess, service_env
from tests.security.receivers import Receiver

JWT_SECRET = "a-log-test-secret-of-at-least-32-bytes"
WEBHOOK_SECRET = "webhook-secret-" + uuid.uuid4().hex
SECRET_KEY = Fernet.generate_key().decode()
TUS = {"Tus-Resumable": "1.0.0"}
KEPT_REQUEST_ID = "client-chose-this.id:42"


@dataclass
class Run:
    """What one run of the service was given and answered, and the log it wrote."""

    secrets: list[str] = field(default_factory=list)
    request_ids: dict[str, str] = field(default_factory=dict)
    lines: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""


def bearer(user: str, role: str) -> str:
    return jwt.encode({"sub": user, "role": role, "exp": int(time.time()) + 600}, JWT_SECRET)


async def refer_key_of(http: httpx.AsyncClient, file_id: str) -> str:
    """A file gets its refer key once the process managers have made it ready."""
    for _ in range(200):
        answer = await http.get(f"/files/{file_id}")
        if answer.status_code == 200 and (refer := answer.json().get("refer")):
            return str(refer["refer_key"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"file {file_id} never got a refer key")


async def open_feed(http: httpx.AsyncClient, path: str, token: str) -> None:
    async with http.stream("GET", path, params={"token": token}) as feed:
        assert feed.status_code == 200, await feed.aread()


async def drive(serve: ServeProcess, receiver: Receiver, run: Run) -> None:
    key = serve.api_key
    assert key is not None
    token = bearer("carol", "operator")
    run.secrets += [key, key.split("_", 2)[2], token, JWT_SECRET, WEBHOOK_SECRET, SECRET_KEY]
    base = f"{serve.base_url}/api/v1"
    async with (
        httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=30) as admin,
        httpx.AsyncClient(base_url=base, timeout=30) as anonymous,
    ):
        submitted = await admin.post(
            "/tasks",
            json={"code": "print(1)", "callback_url": receiver.url()},
            headers={"X-Request-Id": KEPT_REQUEST_ID},
        )
        assert submitted.status_code == 202, submitted.text
        run.request_ids["submit"] = submitted.headers["X-Request-Id"]
        task_id, seq = submitted.json()["task_id"], submitted.json()["seq"]

        insane = await admin.get(
            f"/tasks/{task_id}", params={"wait_for_seq": seq}, headers={"X-Request-Id": "x" * 200}
        )
        assert insane.status_code == 200, insane.text
        run.request_ids["insane"] = insane.headers["X-Request-Id"]

        as_carol = await anonymous.get("/tasks", headers={"Authorization": f"Bearer {token}"})
        assert as_carol.status_code == 200, as_carol.text
        run.request_ids["jwt"] = as_carol.headers["X-Request-Id"]

        wrong = "jfk_" + "0" * 16 + "_" + "w" * 43
        run.secrets.append(wrong.split("_", 2)[2])
        refused = await anonymous.get("/tasks", headers={"X-API-Key": wrong})
        assert refused.status_code == 401, refused.text

        await open_feed(anonymous, "/events/stream", key)
        await open_feed(anonymous, "/events/stream", token)
        ws_url = f"{base.replace('http', 'ws', 1)}/events/ws?token={token}"
        async with websockets.connect(ws_url) as ws:
            run.request_ids["ws"] = ws.response.headers["X-Request-Id"]

        data = uuid.uuid4().bytes * 64
        uploaded = await admin.post(
            "/uploads/",
            content=data,
            headers={
                **TUS,
                "Upload-Length": str(len(data)),
                "Upload-Metadata": "filename " + base64.b64encode(b"clip.mp4").decode(),
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert uploaded.status_code == 201, uploaded.text
        file_id = uploaded.headers["Location"].rstrip("/").rsplit("/", 1)[1]
        refer_key = await refer_key_of(admin, file_id)
        run.secrets.append(refer_key)
        await open_feed(anonymous, f"/files/{file_id}/events", key)
        downloaded = await admin.get(f"/download/{refer_key}")
        assert downloaded.status_code in (200, 206), downloaded.text
        run.request_ids["download"] = downloaded.headers["X-Request-Id"]

        for _ in range(100):  # the webhook, signed with the secret, reaches its receiver
            if receiver.requests:
                break
            await asyncio.sleep(0.05)
        assert receiver.requests, "the webhook never arrived"
        last = await admin.get("/health")
        run.request_ids["last"] = last.headers["X-Request-Id"]


async def read_log(serve: ServeProcess, run: Run) -> None:
    """Until the last request's access line is there: the service writes each line as it goes."""
    for _ in range(100):
        run.text = await asyncio.to_thread(serve.log_path.read_text)
        if run.request_ids["last"] in run.text:
            break
        await asyncio.sleep(0.05)
    # The harness marks each start in the file with a line of its own; every other line is ours.
    ours = [line for line in run.text.splitlines() if line and not line.startswith("=====")]
    run.lines = [json.loads(line) for line in ours]


@pytest.fixture(scope="module")
async def run(
    nats_server: EmbeddedNatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Run]:
    stream = f"L{uuid.uuid4().hex[:10].upper()}"
    env = service_env(
        nats_server.url,
        stream,
        tmp_path_factory.mktemp("logs"),
        free_port(),
        JETFLOW_JWT_SECRET=JWT_SECRET,
        JETFLOW_WEBHOOK_SECRET=WEBHOOK_SECRET,
        JETFLOW_SECRET_KEY=SECRET_KEY,
        JETFLOW_WEBHOOK_ALLOW="127.0.0.0/8",
        JETFLOW_REFER_ROTATE_S="60",
    )
    serve = ServeProcess(env, Path(env["JETFLOW_DATA_DIR"]) / "serve.log")
    receiver = await Receiver().start()
    result = Run()
    try:
        await serve.issue_key()  # an admin key of user "faults", made before the start
        await serve.start()  # waits until the service accepts it
        await drive(serve, receiver, result)
        await read_log(serve, result)
        yield result
    finally:
        await receiver.stop()
        await serve.stop()
        await serve.reap()
        await delete_stream(Settings(stream=stream), nats_server.url)


async def test_every_line_is_json_naming_its_request_and_actor(run: Run) -> None:
    assert run.lines, "the service logged nothing"
    assert all({"time", "level", "logger", "message"} <= set(line) for line in run.lines)
    access = [line for line in run.lines if line["logger"] == "uvicorn.access"]
    assert access and all("request_id" in line for line in access)

    [submit] = [line for line in access if line["request_id"] == run.request_ids["submit"]]
    assert (submit["method"], submit["path"], submit["status"]) == ("POST", "/api/v1/tasks", 202)
    assert submit["actor"] == "user:faults"
    assert submit["aggregate"] == "task" and isinstance(submit["seq"], int)
    [carol] = [line for line in access if line["request_id"] == run.request_ids["jwt"]]
    assert carol["actor"] == "user:carol"
    [download] = [line for line in access if line["request_id"] == run.request_ids["download"]]
    assert download["path"] == "/api/v1/download/[redacted]"
    feeds = [line for line in access if line["path"].startswith("/api/v1/events/stream?")]
    assert {line["path"] for line in feeds} == {"/api/v1/events/stream?token=[redacted]"}
    assert {line.get("actor") for line in feeds} == {"user:faults", "user:carol"}
    ws = [line for line in run.lines if line.get("request_id") == run.request_ids["ws"]]
    assert [line["actor"] for line in ws] == ["user:carol"] * len(ws)  # "accepted", "open", …
    assert any("WebSocket /api/v1/events/ws?token=[redacted]" in line["message"] for line in ws)


async def test_a_sane_request_id_is_kept_and_any_other_replaced(run: Run) -> None:
    assert run.request_ids["submit"] == KEPT_REQUEST_ID
    replaced = run.request_ids["insane"]
    assert len(replaced) == 32 and int(replaced, 16) >= 0
    assert "x" * 129 not in run.text


async def test_no_secret_appears_anywhere_in_the_log(run: Run) -> None:
    assert len(run.secrets) == 8
    leaked = [secret for secret in run.secrets if secret in run.text]
    assert leaked == []


def test_a_terminal_gets_plain_lines_with_the_same_fields() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("auto", stream))
    logger = logging.getLogger("tests.logs.terminal")
    logger.addHandler(handler)
    try:
        with log_context.request("req-1"), log_context.bound(aggregate="task"):
            log_context.note(actor="user:ann")
            logger.warning("GET /api/v1/download/%s?token=%s", "rk-secret", "jfk_ab12_s3cr3t")
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue().strip()
    assert " WARNING tests.logs.terminal GET /api/v1/download/[redacted]?token=[redacted]" in line
    assert line.endswith("[request_id=req-1 actor=user:ann aggregate=task]")
    assert "rk-secret" not in line and "s3cr3t" not in line
    assert isinstance(logs.formatter("auto", io.StringIO()), logs.JsonFormatter)
