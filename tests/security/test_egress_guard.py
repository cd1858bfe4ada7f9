"""Finding 4, the connect-time guard itself: a name is resolved once, every address it gives is
checked, and the connection goes to a checked address, so DNS rebinding cannot slip past it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from ipaddress import ip_address

import pytest

from adapters.egress_http import EgressRefused, guarded_client
from adapters.egress_policy import EgressPolicy, IPAddress
from tests.security.receivers import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    target = await Receiver().start()
    yield target
    await target.stop()


async def test_a_name_is_resolved_once_and_the_address_checked_is_the_one_connected() -> None:
    """DNS rebinding: a name that answers an allowed address when checked and a refused one
    when connected. The guard resolves once, so the second answer is never asked for."""
    refused = await Receiver(host="127.0.0.1").start()
    allowed = await Receiver(host="127.0.0.2").start(refused.port)
    answers: list[list[IPAddress]] = [[ip_address("127.0.0.2")], [ip_address("127.0.0.1")]]
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    policy = EgressPolicy.parse("127.0.0.2/32")
    try:
        async with guarded_client(
            policy, timeout_s=5, max_connections=4, resolver=rebinding
        ) as client:
            answer = await client.post(f"http://rebind.test:{refused.port}/hook", content=b"{}")
    finally:
        await refused.stop()
        await allowed.stop()
    assert answer.status_code == 200
    assert asked == ["rebind.test"]
    assert allowed.requests[0].headers["host"] == f"rebind.test:{refused.port}"
    assert refused.connections == 0


async def test_one_refused_address_among_the_answers_refuses_the_name(
    receiver: Receiver,
) -> None:
    async def mixed(host: str, port: int) -> list[IPAddress]:
        return [ip_address("93.184.215.14"), ip_address("127.0.0.1")]

    async with guarded_client(EgressPolicy(), timeout_s=5, max_connections=4, resolver=mixed) as c:
        with pytest.raises(EgressRefused, match=r"^refused by policy$"):
            await c.post(f"http://mixed.test:{receiver.port}/hook", content=b"{}")
    assert receiver.connections == 0
