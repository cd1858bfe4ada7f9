"""Finding 11: credentials in URLs. ``?token=`` opens live feeds only, and neither a token nor
a refer key in a URL reaches the service's log."""

from __future__ import annotations

import asyncio

from tests.security.conftest import Embedded, api, until_accepted


async def test_a_token_in_the_url_is_refused_off_the_live_feeds(embedded: Embedded) -> None:
    key = await embedded.api_key("viewer", "vera")
    async with api(embedded.serve.base_url, key) as vera:
        await until_accepted(vera, "GET", "/tasks")
    async with api(embedded.serve.base_url) as anonymous:
        listed = await anonymous.get("/tasks", params={"token": key})
        assert listed.status_code == 401
        assert "live feeds only" in listed.json()["error"]["message"]
        async with anonymous.stream("GET", "/events/stream", params={"token": key}) as feed:
            assert feed.status_code == 200
            assert feed.headers["content-type"].startswith("text/event-stream")


async def test_tokens_and_refer_keys_are_redacted_from_the_log(embedded: Embedded) -> None:
    key = await embedded.api_key("viewer", "walt")
    refer_key = "rk_" + "q" * 40
    async with api(embedded.serve.base_url) as anonymous:
        for _ in range(200):  # the key works once the read model has it
            async with anonymous.stream("GET", "/events/stream", params={"token": key}) as feed:
                if feed.status_code == 200:
                    break
            await asyncio.sleep(0.05)
        await anonymous.get("/tasks", params={"token": key})
        await anonymous.get(f"/download/{refer_key}")
    await asyncio.sleep(0.5)  # let the access log reach the file

    log = await asyncio.to_thread(embedded.serve.log_path.read_text)
    secret = key.split("_", 2)[2]
    assert "/api/v1/events/stream?token=[redacted]" in log
    assert secret not in log
    assert refer_key not in log
    assert "/api/v1/download/[redacted]" in log
