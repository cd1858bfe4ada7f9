"""Finding 17: a token that never expires and a guessable HS256 secret are refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from api.settings import Settings

SECRET = "a-test-secret-of-at-least-32-bytes!!"


def bearer(exp: float) -> dict[str, str]:
    token = jwt.encode({"sub": "carol", "role": "operator", "exp": int(exp)}, SECRET)
    return {"Authorization": f"Bearer {token}"}


async def test_a_token_living_longer_than_the_setting_is_refused(service_factory: Any) -> None:
    service = await service_factory(jwt_algorithm="HS256", jwt_key=SECRET, jwt_max_lifetime_s=3600)
    service.http.headers.pop("X-API-Key")

    forever = await service.http.get("/tasks", headers=bearer(10**30))
    two_hours = await service.http.get("/tasks", headers=bearer(time.time() + 7200))
    an_hour = await service.http.get("/tasks", headers=bearer(time.time() + 3000))

    assert forever.status_code == 401
    assert forever.json()["error"]["code"] == "unauthorized"
    assert two_hours.status_code == 401
    assert an_hour.status_code == 200


def test_a_short_hs256_secret_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Settings(jwt_algorithm="HS256", jwt_key="nineteen-byte-secrt")
    jetflow = Path(sys.executable).parent / "jetflow"
    served = subprocess.run(
        [str(jetflow), "serve"],
        env={
            **os.environ,
            "JETFLOW_JWT_SECRET": "nineteen-byte-secrt",
            "JETFLOW_DATA_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.returncode != 0
    assert "JETFLOW_JWT_SECRET must be at least 32 bytes" in served.stderr
    assert "Traceback" not in served.stderr
    assert not (tmp_path / "nats").exists()  # refused before anything started
