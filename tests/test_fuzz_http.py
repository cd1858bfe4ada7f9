"""The other half of HTTP fuzzing: input the schema calls invalid is refused with a 4xx (never a
5xx, never accepted) and appends nothing to the event stream.

Schemathesis runs in negative mode (every request breaks the served OpenAPI document somewhere:
a wrong type, a missing required field, a value out of range) against the live service with admin
credentials, so no refusal is an authorisation one. Requests run one at a time, and every event
a user's request appended must be one an accepted write answered (its ``seq``), or fall within
a request answered 2xx (schemathesis' HAR log says when each ran): a refusal that appended would
leave an event nobody claimed, inside its own window.

Left out (``LAX``), reported to be made strict: these accept input their schema calls invalid,
because pydantic's lax mode coerces it or a required body has defaults. Two of them append:

- ``POST /nodes/{id}/heartbeat`` with no body: 202, NodeJoined + NodeHeartbeat appended;
- ``POST /nodes/{id}/lease`` with no body: the node offers a task's defaults (as lease calls
  from before node offers do), 204 or a lease;
- ``POST /scene/analyse`` with ``"assets": [{"path": "0", "exists": 0, ...}]``: 201, appended;
- ``POST /hardware-configs/match`` with ``{"gpu_count": false}``: 200 (read only);
- ``GET /audit/events?until=0.5``: 200 (read only).

The schema cannot say what crafted input looks like, so hypothesis adds three strategies of its
own (finding 14), each sent to the served app and each answer held to the same rule (a 4xx with
the JSON error envelope and a stable ``code``, nothing appended): JSON bodies nested 10 to 100,000
levels deep for every route the schema lists with a JSON body; numeric headers and query parameters
(``Upload-Length``, ``Upload-Offset``, ``from_seq``, ``Last-Event-ID``, ...) written with
non-ASCII digits (``٣``, ``²``, fullwidth ones) or past 64 bits; and free-form fields large
enough that the event carrying them would exceed the event log's message size.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import Service
from tests.test_schemathesis import run_schemathesis

pytestmark = pytest.mark.asyncio

# The idle-compute seed's routes at the root (``api/seeds/idle_compute``): their writes answer
# the seed's bodies, which carry no ``seq`` to claim their events by, so the negative run leaves
# them out; test_schemathesis holds them to no 5xx, tests/seeds to the seed's refusals, and the
# crafted inputs below to a 4xx in the seed's ``{"detail": …}`` envelope.
SEED_ROUTES = (
    "",
    "submit",
    "get_task",
    "submit_result",
    "status/[^/]+",
    "results",
    "health",
    "stats",
    "internal/[^/]+",
)
LAX = (
    "api/v1/nodes/[^/]+/heartbeat",
    "api/v1/nodes/[^/]+/lease",
    "api/v1/scene/analyse",
    "api/v1/hardware-configs/match",
    "api/v1/audit/events",
)


async def test_invalid_requests_are_refused_and_append_nothing(
    service: Service, tmp_path: Path
) -> None:
    # Given a service whose stream holds only the set-up (the admin key, the violation catalogue)
    settled = await service.runtime.store.last_seq()
    await asyncio.sleep(0.5)  # the start-up's own appends (seeding) are done
    before = await service.runtime.store.last_seq()
    assert before >= settled

    # When schemathesis sends only requests that break the schema
    # Then every one was refused with a 4xx (the run fails on a 5xx or an accepted one), ...
    generated = await run_schemathesis(
        service,
        tmp_path,
        "--mode",
        "negative",
        "--checks",
        "not_a_server_error,negative_data_rejection",
        "--exclude-path-regex",
        rf"^/(schema|api/v1/events/(stream|ws)|{'|'.join(LAX + SEED_ROUTES)})$",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "10",
        "--seed",
        "11",
        "--report",
        "har",
        timeout_s=300,
    )
    assert generated > 300  # every operation was exercised, not skipped
    # ... and no refused request recorded anything: each event a user's request appended falls
    # within a request that was answered 2xx (requests run one at a time; schemathesis also sends
    # a few valid requests, e.g. as baselines or with only an ignored query parameter wrong)
    appended = [
        e
        for e in await service.runtime.store.read_subject("ev.>", before + 1)
        if e.actor.startswith("user:")
    ]
    windows = request_windows(tmp_path)
    assert len(windows) > 300
    claimed = claimed_sequences(tmp_path)
    orphans = [
        (e.aggregate, e.type, e.occurred_at.isoformat(), during(e.occurred_at, windows))
        for e in appended
        if e.seq not in claimed
        and not any(ok and start <= e.occurred_at <= end for start, end, ok, _ in windows)
    ]
    assert not orphans, orphans[:10]


Window = tuple[datetime, datetime, bool, str]


def har_entries(report_dir: Path) -> list[dict[str, Any]]:
    return [
        entry
        for har in report_dir.glob("har-*.json")
        for entry in json.loads(har.read_text())["log"]["entries"]
    ]


def claimed_sequences(report_dir: Path) -> set[int]:
    """The stream sequences accepted writes answered (``seq`` = their last event, ``events``
    their types): such an event is accounted for whatever the clocks of the HAR and the server
    say, so the time windows only have to place writes that answer no sequence (tus)."""
    claimed: set[int] = set()
    for entry in har_entries(report_dir):
        response = entry["response"]
        if not 200 <= response["status"] < 300:
            continue
        try:
            body = json.loads(response["content"].get("text") or "null")
        except json.JSONDecodeError:
            continue
        if isinstance(body, dict) and isinstance(body.get("seq"), int) and body.get("events"):
            last = body["seq"]
            claimed.update(range(last - len(body["events"]) + 1, last + 1))
    return claimed


def request_windows(report_dir: Path) -> list[Window]:
    """When each request ran, whether it was accepted (a 2xx), and what it was, from the HAR."""
    windows = []
    for entry in har_entries(report_dir):
        start = datetime.fromisoformat(entry["startedDateTime"])
        end = start + timedelta(milliseconds=entry["time"] + 5)
        request, status = entry["request"], entry["response"]["status"]
        body = request.get("postData", {}).get("text", "")[:300]
        what = f"{request['method']} {request['url']} {body} -> {status}"
        windows.append((start - timedelta(milliseconds=5), end, 200 <= status < 300, what))
    return windows


def during(moment: datetime, windows: list[Window]) -> list[str]:
    return [what for start, end, _, what in windows if start <= moment <= end]


# ---------------------------------------------------------------- crafted inputs (finding 14)

# Small budgets: the three properties together stay within a few seconds. The service is the
# session's shared one (no timers), handed to every example: nothing but the examples appends.
CRAFTED = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
STABLE_CODE = re.compile(r"[a-z][a-z0-9_]*")
TUS = {"Tus-Resumable": "1.0.0"}
MAX_DEPTH = 100_000
EVENT_LIMIT = 1024 * 1024  # the stream's max_msg_size (adapters.event_store.StreamSettings)


def assert_refused(answer: httpx.Response, what: str, seed: bool = False) -> None:
    """A client's mistake: a 4xx in the JSON error envelope with a stable code, no traceback
    (on a seed route outside /api/v1, the seed's ``{"detail": "…"}``)."""
    assert 400 <= answer.status_code < 500, f"{what}: {answer.status_code} {answer.text[:300]}"
    assert answer.headers.get("content-type", "").startswith("application/json"), what
    if seed:
        assert set(answer.json()) == {"detail"}, what
        assert isinstance(answer.json()["detail"], str), what
        return
    code = answer.json()["error"]["code"]
    assert STABLE_CODE.fullmatch(code), (what, code)


async def json_write_routes(service: Service) -> list[tuple[str, str]]:
    """Every operation of the served schema that takes a JSON body, path ids filled in."""
    schema = (await service.http.get(f"{service.base_url}/schema/openapi.json")).json()
    return sorted(
        (method.upper(), re.sub(r"\{[^}]+\}", "fuzz1", path))
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    )


def nested(depth: int, shape: str) -> str:
    """A JSON text nesting ``depth`` levels: arrays, objects, or both in turn."""
    if shape == "arrays":
        return "[" * depth + "]" * depth
    if shape == "objects":
        return '{"a":' * depth + "0" + "}" * depth
    return '[{"a":' * (depth // 2) + "0" + "}]" * (depth // 2)


@pytest.mark.shared_stack
@settings(CRAFTED, max_examples=30)
@given(
    route=st.integers(min_value=0),
    depth=st.integers(min_value=10, max_value=MAX_DEPTH),
    shape=st.sampled_from(["arrays", "objects", "both"]),
)
@example(route=0, depth=MAX_DEPTH, shape="arrays")
@example(route=1, depth=MAX_DEPTH, shape="objects")
async def test_deeply_nested_bodies_are_refused(
    service: Service, route: int, depth: int, shape: str
) -> None:
    routes = await json_write_routes(service)
    assert len(routes) > 20  # every JSON write route, not a few
    method, path = routes[route % len(routes)]
    before = await service.runtime.store.last_seq()
    answer = await service.http.request(
        method,
        f"{service.base_url}{path}",
        content=nested(depth, shape),
        headers={"Content-Type": "application/json"},
    )
    what = f"{method} {path} nested {depth} deep ({shape})"
    if any(re.fullmatch(lax, path.lstrip("/")) for lax in LAX):
        # Documented above as accepting what their schema refuses; never a 5xx all the same.
        assert answer.status_code < 500, f"{what}: {answer.status_code} {answer.text[:300]}"
        return
    assert_refused(answer, what, seed=not path.startswith("/api/v1"))
    assert await service.runtime.store.last_seq() == before


# Digits as str.isdigit() sees them (decimal digits of every script, superscripts, circled
# numbers): int() takes some (``int("٣") == 3``) and refuses others (``int("²")``); both must be
# refused, as must ASCII numbers past the 64-bit sequences and sizes. A header arrives decoded as
# ISO-8859-1, so only that range's digits (the superscripts) reach the server as digits there;
# the others arrive as the UTF-8 bytes a client sent.
NON_ASCII_DIGIT = st.one_of(
    st.sampled_from("¹²³"),
    st.characters(categories=["Nd", "No"], exclude_characters=string.digits),
)
ASCII_DIGITS = st.text(string.digits, max_size=8)
NUMBERS = st.one_of(
    st.tuples(ASCII_DIGITS, NON_ASCII_DIGIT, st.text(string.digits + "٣²\uff13", max_size=8)).map(
        "".join
    ),
    st.integers(min_value=2**63, max_value=10**30).map(str),
)
# (method, path, where the number goes, its name); an upload id is filled in per example.
NUMERIC_INPUTS = [
    ("POST", "/uploads/", "header", "Upload-Length"),
    ("PATCH", "/uploads/{upload}", "header", "Upload-Offset"),
    ("GET", "/audit/events", "query", "from_seq"),
    ("GET", "/audit/events", "query", "limit"),
    ("GET", "/audit/task/fuzz1", "query", "as_of_seq"),
    ("GET", "/tasks", "query", "wait_for_seq"),
    ("GET", "/events/stream", "query", "from_seq"),
    ("GET", "/events/stream", "header", "Last-Event-ID"),
]


@pytest.mark.shared_stack
@settings(CRAFTED, max_examples=60)
@given(target=st.sampled_from(NUMERIC_INPUTS), number=NUMBERS, utf8=st.booleans())
@example(target=NUMERIC_INPUTS[0], number="²", utf8=False)
@example(target=NUMERIC_INPUTS[1], number="٣", utf8=True)
@example(target=NUMERIC_INPUTS[6], number=str(2**70), utf8=False)
async def test_numbers_in_other_digits_or_past_64_bits_are_refused(
    service: Service, target: tuple[str, str, str, str], number: str, utf8: bool
) -> None:
    method, path, where, name = target
    headers = {b"Tus-Resumable": b"1.0.0"}  # as bytes: a number's header goes as raw bytes
    if "{upload}" in path:
        created = await service.http.post("/uploads/", headers={**TUS, "Upload-Length": "10"})
        path = created.headers["Location"].split("/api/v1", 1)[1]
        headers[b"Content-Type"] = b"application/offset+octet-stream"
    params: dict[str, str] = {}
    if where == "header":
        latin = not utf8 and all(ord(c) < 256 for c in number)
        headers[name.encode()] = number.encode("latin-1" if latin else "utf-8")
    else:
        params[name] = number
    before = await service.runtime.store.last_seq()
    what = f"{method} {path} {name}={number!r}"
    content = b"x" if method == "PATCH" else None
    # Streamed, so a live feed that wrongly accepted the number cannot hold the test open.
    async with service.http.stream(
        method, path, params=params, headers=headers, content=content
    ) as answer:
        assert answer.status_code != 200, f"{what}: accepted"
        await answer.aread()
    assert_refused(answer, what)
    assert await service.runtime.store.last_seq() == before


def _filled(count: int, size: int) -> dict[str, str]:
    return {f"K{i}": "x" * size for i in range(count)}


# Free-form fields that ride in an event: each body builder takes the bytes to put there.
OVERSIZED: dict[str, tuple[str, Callable[[int], dict[str, Any]]]] = {
    "deployment config": ("/deployments", lambda n: {"config": {"notes": "x" * n}}),
    "deployment environment": (
        "/deployments",
        lambda n: {"config": {"environment_variables": _filled(n // 8192 + 1, 8192)}},
    ),
    "deployment metadata": ("/deployments", lambda n: {"metadata": _filled(n // 1000 + 1, 1000)}),
    "task code": ("/tasks", lambda n: {"code": "x" * n}),
    "render plugins": (
        "/render-jobs",
        lambda n: {
            "unionid": "fuzz",
            "scene_file": "fuzz.ma",
            "render_engine": "maya",
            "frame_start": 1,
            "frame_end": 1,
            "plugins": _filled(n // 4096 + 1, 4096),
        },
    ),
    "scene info": (
        "/scene/analyse",
        lambda n: {
            "scene_file_hash": "ab" * 16,
            "scene_file": "fuzz.ma",
            "scene_info": {"renderer": "x" * n},
        },
    ),
    "missing assets": (
        "/scene/analyse",
        lambda n: {
            "scene_file_hash": "cd" * 16,
            "scene_file": "fuzz.ma",
            "missing": [{"path": "x" * 4096} for _ in range(n // 4096 + 1)],
        },
    ),
}


@pytest.mark.shared_stack
@settings(CRAFTED, max_examples=20)
@given(
    field=st.sampled_from(sorted(OVERSIZED)),
    size=st.integers(min_value=EVENT_LIMIT + 1, max_value=3 * EVENT_LIMIT),
)
@example(field="deployment config", size=EVENT_LIMIT + 1)
@example(field="scene info", size=2 * EVENT_LIMIT)
@example(field="render plugins", size=EVENT_LIMIT + 1)
async def test_fields_larger_than_an_event_can_be_are_refused(
    service: Service, field: str, size: int
) -> None:
    path, body = OVERSIZED[field]
    before = await service.runtime.store.last_seq()
    answer = await service.http.post(path, json=body(size))
    assert_refused(answer, f"POST {path} with {size} bytes of {field}")
    assert await service.runtime.store.last_seq() == before
