"""Property-based HTTP fuzzing of the served OpenAPI document: no input may cause a 5xx.

Schemathesis (run as its CLI against the live service, admin credentials) generates valid and
invalid requests for every operation. The two live feeds are left out: they never end on their
own, and their parameters are the same filters the audit routes take.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import Service

pytestmark = pytest.mark.asyncio

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


async def run_schemathesis(
    service: Service, tmp_path: Path, *options: str, timeout_s: float
) -> int:
    """Run the CLI against the served schema with the admin key; fail with the failing
    operations if it finds any, else answer how many cases it generated."""
    run = await asyncio.create_subprocess_exec(
        SCHEMATHESIS,
        "run",
        f"{service.base_url}/schema/openapi.json",
        "--header",
        f"X-API-Key: {service.admin_key}",
        # One worker: with two, CPython 3.11 can fail inside hypothesis's lambda-source
        # inspection ("AST constructor recursion depth mismatch"), a crash of the tool itself.
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--report-dir",
        str(tmp_path),
        *options,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(run.communicate(), timeout_s)
    report = out.decode(errors="replace")
    failing = [line for line in report.splitlines() if line.startswith("___") or "[5" in line]
    assert run.returncode == 0, "\n".join(failing) + report[-6000:]
    counted = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counted, report[-3000:]
    return int(counted.group(1))


async def test_no_request_gets_a_server_error(service: Service, tmp_path: Path) -> None:
    generated = await run_schemathesis(
        service,
        tmp_path,
        "--checks",
        "not_a_server_error",
        "--exclude-path-regex",
        r"^/(schema|api/v1/events/(stream|ws))",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "15",
        "--seed",
        "7",
        timeout_s=600,
    )
    assert generated > 500  # every operation was exercised, not skipped
