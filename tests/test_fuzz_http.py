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
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Service
from tests.test_schemathesis import run_schemathesis

pytestmark = pytest.mark.asyncio

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
        rf"^/(schema|api/v1/events/(stream|ws)|{'|'.join(LAX)})$",
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
