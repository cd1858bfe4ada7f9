"""Access control: every route is closed to the wrong caller, and users see only their own work.

The route matrix walks the served OpenAPI document, so a route added later is checked too, and a
handler without a declared policy fails the first test by name.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import time
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from httpx_sse import aconnect_sse
from litestar.routes import HTTPRoute, WebSocketRoute

from api.app import create_app
from api.auth import route_policy
from api.errors import http_error_code
from api.rate_limit import FixedWindowLimiter
from domain.access import ALLOWED, Policy, Role
from tests.conftest import Service, api_client
from tests.test_serve import JETFLOW

pytestmark = pytest.mark.asyncio

HS_SECRET = "a-test-secret-of-at-least-32-bytes!!"
SKIPPED_PREFIXES = ("/schema",)


def operations(schema: dict[str, Any]) -> list[tuple[str, str, Policy]]:
    found = []
    for path, item in schema["paths"].items():
        if path.startswith(SKIPPED_PREFIXES):
            continue
        for method, operation in item.items():
            policy = re.search(r"Access: `(\w+)`", operation.get("description", ""))
            assert policy, f"{method.upper()} {path} documents no access policy"
            found.append((method, path, Policy(policy.group(1))))
    return found


def concrete(path: str, ids: dict[str, str] | None = None) -> str:
    ids = ids or {}
    return re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "1"), path)


def wrong_role(policy: Policy) -> Role | None:
    refused = [r for r in (Role.worker, Role.viewer, Role.operator) if r not in ALLOWED[policy]]
    return refused[0] if refused else None


async def call(client: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
    # The clients' base is /api/v1; a route outside it (/metrics) is asked for by its full URL.
    if path.startswith("/api/v1"):
        target = path.removeprefix("/api/v1")
    else:
        target = str(client.base_url.copy_with(path=path))
    # The uploads routes speak tus: a well-formed chunk, so that only access can refuse it.
    tus = {"Tus-Resumable": "1.0.0"}
    if method == "patch":
        chunk = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
        return await client.patch(target, headers={**tus, **chunk})
    body = {} if method in ("post", "put") else None
    return await client.request(method.upper(), target, json=body, headers=tus)


def refusal_code(path: str, answer: httpx.Response) -> str:
    """jetflow's error code; the idle-compute seed's routes (outside /api/v1) answer only the
    seed's ``{"detail": …}``, so there the status alone tells the code."""
    body = answer.json()
    if path.startswith(("/api/v1", "/metrics")):
        return str(body["error"]["code"])
    assert set(body) == {"detail"}, path
    return http_error_code(answer.status_code)


@pytest.mark.shared_stack
async def test_every_route_declares_a_policy(service: Service) -> None:
    app = create_app(service.runtime)
    missing = [
        f"{sorted(h.http_methods)} {route.path}"
        for route in app.routes
        if isinstance(route, HTTPRoute) and not route.path.startswith(SKIPPED_PREFIXES)
        for h in route.route_handlers
        if route_policy(h) is None
    ]
    missing += [
        route.path
        for route in app.routes
        if isinstance(route, WebSocketRoute) and route_policy(route.route_handler) is None
    ]
    assert missing == []


@pytest.mark.shared_stack
async def test_no_credentials_and_wrong_roles_are_refused_on_every_route(service: Service) -> None:
    schema = (await service.http.get(f"{service.base_url}/schema/openapi.json")).json()
    anonymous = httpx.AsyncClient(base_url=f"{service.base_url}/api/v1", timeout=30)
    by_role = {role: await service.client_as(role, f"{role}-user") for role in Role}
    checked = 0
    async with anonymous:
        for method, path, policy in operations(schema):
            if path in ("/api/v1/events/ws", "/api/v1/events/stream", "/ws/updates"):
                continue  # not plain HTTP: covered by the live-feed tests (tests/seeds too)
            url = concrete(path)
            answer = await call(anonymous, method, url)
            if policy is Policy.public:
                assert answer.status_code not in (401, 403), f"{method} {path}"
                continue
            assert answer.status_code == 401, f"{method} {path}: {answer.status_code}"
            if method != "head":  # a HEAD answer has no body
                assert refusal_code(path, answer) == "unauthorized", f"{method} {path}"
            role = wrong_role(policy)
            if role is not None:
                refused = await call(by_role[role], method, url)
                assert refused.status_code == 403, f"{role} {method} {path}: {refused.text}"
                if method != "head":
                    assert refusal_code(path, refused) == "forbidden"
            checked += 1
    assert checked > 40


@pytest.mark.shared_stack
async def test_a_bad_key_is_refused_not_ignored(service: Service) -> None:
    forged = service.admin_key[:-4] + "AAAA"
    async with api_client(service.base_url, None) as client:
        answer = await client.get("/tasks", headers={"X-API-Key": forged})
        assert answer.status_code == 401
        assert answer.json()["error"]["message"] == "The API key is unknown or revoked"
        unknown = await client.get("/tasks", headers={"Authorization": "Bearer jfk_0_nope"})
        assert unknown.status_code == 401
        good = await client.get("/tasks", headers={"Authorization": f"Bearer {service.admin_key}"})
        assert good.status_code == 200


async def owned_work(service: Service, client: httpx.AsyncClient) -> dict[str, str]:
    """A task, a render job and a deployment, created by the client's user."""
    task = (await client.post("/tasks", json={"code": "print(1)"})).json()
    job = await client.post(
        "/render-jobs",
        json={
            "unionid": "ignored",
            "oss_file_path": "p/scene.ma",
            "render_engine": "maya",
            "total_frames": 2,
        },
    )
    assert job.status_code == 201, job.text
    deployment = await client.post("/deployments", json={"mode": "fallback"})
    assert deployment.status_code == 202, deployment.text
    upload = await client.post(
        "/uploads/",
        headers={"Tus-Resumable": "1.0.0", "Upload-Length": "5"},
    )
    assert upload.status_code == 201, upload.text
    upload_id = upload.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    done = await client.patch(
        f"/uploads/{upload_id}",
        content=b"hello",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert done.status_code == 204, done.text
    seq = await service.runtime.store.last_seq()
    await service.http.get("/tasks", params={"wait_for_seq": seq})
    await service.http.get("/render-jobs", params={"wait_for_seq": seq})
    await service.http.get("/deployments", params={"wait_for_seq": seq})
    await service.http.get("/files", params={"wait_for_seq": seq})
    return {
        "upload_id": upload_id,
        "file_id": upload_id,
        "task_id": task["task_id"],
        "job_id": job.json()["data"]["id"],
        "deployment_id": deployment.json()["deployment_id"],
    }


async def test_another_users_work_does_not_exist_for_them(service: Service) -> None:
    ann = await service.client_as("operator", "ann")
    bob = await service.client_as("operator", "bob")
    ids = await owned_work(service, ann)
    schema = (await service.http.get(f"{service.base_url}/schema/openapi.json")).json()

    refused = 0
    for method, path, policy in operations(schema):
        params = set(re.findall(r"\{(\w+)\}", path))
        if policy not in (Policy.read, Policy.operate) or not params & set(ids):
            continue
        url = concrete(path, ids)
        answer = await call(bob, method, url)
        assert answer.status_code == 404, f"bob {method} {url}: {answer.text}"
        refused += 1
        if path.endswith("/events"):
            continue  # ann's own feed would stream for ever
        mine = await call(ann, method, url)
        assert mine.status_code != 404 or "frame" in path, f"ann {method} {url}: {mine.text}"
    assert refused >= 25

    for listing in ("/tasks", "/render-jobs", "/deployments", "/files"):
        theirs = json.dumps((await bob.get(listing)).json())
        assert ids["task_id"] not in theirs and ids["job_id"] not in theirs
        assert ids["deployment_id"] not in theirs and ids["file_id"] not in theirs
    assert (await bob.get("/stats")).json()["tasks"]["total"] == 0
    everything = json.dumps((await service.http.get("/tasks")).json())
    assert ids["task_id"] in everything  # the admin sees every owner's work


@pytest.mark.shared_stack
async def test_the_owner_is_the_caller_and_the_actor_is_recorded(service: Service) -> None:
    ann = await service.client_as("operator", "ann")
    submitted = (await ann.post("/tasks", json={"code": "print(1)", "owner": "mallory"})).json()
    task = (
        await ann.get(f"/tasks/{submitted['task_id']}", params={"wait_for_seq": submitted["seq"]})
    ).json()
    assert task["owner"] == "ann"
    [event] = (await service.http.get(f"/audit/task/{submitted['task_id']}")).json()["events"]
    assert event["actor"] == "user:ann"

    on_behalf = (await service.http.post("/tasks", json={"code": "1", "owner": "ann"})).json()
    mine = await ann.get(
        f"/tasks/{on_behalf['task_id']}", params={"wait_for_seq": on_behalf["seq"]}
    )
    assert mine.status_code == 200  # an admin may create for another user


@pytest.mark.shared_stack
async def test_a_viewer_reads_but_cannot_act(service: Service) -> None:
    ann = await service.client_as("operator", "ann")
    viewer = await service.client_as("viewer", "ann")
    submitted = (await ann.post("/tasks", json={"code": "print(1)"})).json()
    seen = await viewer.get(
        f"/tasks/{submitted['task_id']}", params={"wait_for_seq": submitted["seq"]}
    )
    assert seen.status_code == 200
    cancel = await viewer.post(f"/tasks/{submitted['task_id']}/cancel", json={})
    assert cancel.status_code == 403


@pytest.mark.shared_stack
async def test_a_worker_reports_but_cannot_submit_or_read(service: Service) -> None:
    worker = await service.client_as("worker", "node-op")
    assert (await worker.post("/tasks", json={"code": "1"})).status_code == 403
    assert (await worker.get("/tasks")).status_code == 403
    assert (await worker.post("/nodes/n1/heartbeat", json={})).status_code == 202


def hs256(claims: dict[str, Any]) -> str:
    return jwt.encode({"exp": int(time.time()) + 60, **claims}, HS_SECRET, algorithm="HS256")


async def test_hs256_bearer_tokens(service_factory: Any) -> None:
    service = await service_factory(jwt_algorithm="HS256", jwt_key=HS_SECRET)
    service.http.headers.pop("X-API-Key")
    headers = {"Authorization": f"Bearer {hs256({'sub': 'carol', 'role': 'operator'})}"}
    submitted = await service.http.post("/tasks", json={"code": "1"}, headers=headers)
    assert submitted.status_code == 202, submitted.text
    expired = jwt.encode(
        {"sub": "carol", "role": "operator", "exp": int(time.time()) - 10}, HS_SECRET
    )
    late = await service.http.get("/tasks", headers={"Authorization": f"Bearer {expired}"})
    assert late.status_code == 401
    forged = jwt.encode({"sub": "carol", "role": "admin", "exp": 2**31}, "another-secret-" * 3)
    assert (await service.http.get("/tasks", headers={"X-API-Key": forged})).status_code == 401
    viewer = {"Authorization": f"Bearer {hs256({'sub': 'dave'})}"}  # no role claim: viewer
    assert (
        await service.http.post("/tasks", json={"code": "1"}, headers=viewer)
    ).status_code == 403


def forged_hs256(claims: dict[str, Any], key: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing = f"{header}.{b64(json.dumps(claims).encode())}"
    return f"{signing}.{b64(hmac.new(key, signing.encode(), hashlib.sha256).digest())}"


async def test_rs256_bearer_tokens(service_factory: Any) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    service = await service_factory(jwt_algorithm="RS256", jwt_key=public.decode())
    service.http.headers.pop("X-API-Key")
    token = jwt.encode(
        {"sub": "erin", "role": "viewer", "exp": int(time.time()) + 60}, private, algorithm="RS256"
    )
    answer = await service.http.get("/tasks", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert answer.json()["total"] == 0  # erin owns nothing yet
    # The classic confusion attack: HS256 "signed" with the public key must not pass.
    hs = forged_hs256({"sub": "erin", "role": "admin", "exp": 2**31}, public)
    assert (await service.http.get("/tasks", headers={"X-API-Key": hs})).status_code == 401


async def test_rate_limit_per_key_with_headers(service_factory: Any) -> None:
    service = await service_factory(rate_limit_per_minute=5)
    answers = [await service.http.get("/nodes") for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert answers[0].headers["X-RateLimit-Limit"] == "5"
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["4", "3", "2", "1", "0"]
    limited = await service.http.get("/nodes")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["X-RateLimit-Reset"]) > 0
    other = await service.client_as("viewer", "someone-else")
    assert (await other.get("/nodes")).status_code == 200


async def test_live_feeds_authenticate_and_show_only_own_events(service: Service) -> None:
    ann = await service.client_as("operator", "ann")
    bob = await service.client_as("operator", "bob")
    ann_task = (await ann.post("/tasks", json={"code": "1"})).json()
    bob_task = (await bob.post("/tasks", json={"code": "2"})).json()
    bob_key = bob.headers["X-API-Key"]

    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as raw:
        refused = await raw.get("/api/v1/events/stream")
        assert refused.status_code == 401
        async with aconnect_sse(
            raw, "GET", "/api/v1/events/stream", params={"from_seq": 1, "token": bob_key}
        ) as source:
            first = await asyncio.wait_for(anext(source.aiter_sse()), 10)
    assert int(first.id) == bob_task["seq"]  # ann's earlier event was not shown

    ws = f"{service.base_url.replace('http', 'ws', 1)}/api/v1/events/ws"
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(f"{ws}?from_seq=1"):
            pass
    async with websockets.connect(f"{ws}?from_seq=1&token={bob_key}") as feed:
        message = json.loads(await asyncio.wait_for(feed.recv(), 10))
    assert message["seq"] == bob_task["seq"]
    assert ann_task["seq"] < bob_task["seq"]


async def test_keys_are_created_listed_and_revoked_from_the_command_line(
    service_factory: Any,
) -> None:
    service = await service_factory(key_cache_s=0.0)
    settings = service.runtime.settings
    env = {
        **os.environ,
        "NATS_URL": service.runtime.nats_url,
        "JETFLOW_STREAM": settings.stream,
        "JETFLOW_DATA_DIR": str(settings.data_dir),
    }

    async def keys(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            JETFLOW, "keys", *args, env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0
        return out.decode()

    token = (await keys("create", "--role", "viewer", "--user", "frank", "--label", "ci")).strip()
    key_id = token.split("_")[1]
    headers = {"X-API-Key": token}
    for _ in range(100):  # usable once the read model has it
        if (await service.http.get("/tasks", headers=headers)).status_code == 200:
            break
        await asyncio.sleep(0.05)
    listed = await keys("list")
    assert f"{key_id}  frank" in listed and "viewer" in listed and token not in listed
    await keys("revoke", key_id)
    for _ in range(100):
        if (await service.http.get("/tasks", headers=headers)).status_code == 401:
            break
        await asyncio.sleep(0.05)
    assert (await service.http.get("/tasks", headers=headers)).status_code == 401


async def test_a_rate_limit_window_refills_when_it_ends() -> None:
    limiter = FixedWindowLimiter(2, window_s=60)
    assert limiter.take("k", now=0.0) == (True, 1, 60)
    assert limiter.take("k", now=10.0) == (True, 0, 50)
    assert limiter.take("k", now=59.5) == (False, 0, 1)
    assert limiter.take("other", now=59.5) == (True, 1, 60)  # keys are counted apart
    assert limiter.take("k", now=60.0) == (True, 1, 60)
