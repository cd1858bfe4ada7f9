"""An HTTP client that connects only where the egress policy permits, checked as it connects.

Checking a URL's host before sending is not enough: the name is resolved again when the connection
is made, and it can answer differently the second time (DNS rebinding) or name a private address
from the start. So the check sits in the connection: an httpcore network backend resolves the host
once, refuses unless every address it got is permitted (or the operator named the host), and
connects to a checked address. httpcore takes the TLS server name (SNI, certificate check) and the
Host header from the request's URL, not from the socket, so both keep the URL's host.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable

import httpcore
import httpx

from adapters.egress_policy import EgressPolicy, IPAddress, literal_address

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class EgressRefused(Exception):
    """The target is not one outbound calls may reach. The message says nothing of the network, so
    a refusal reads the same whatever is, or is not, listening there."""

    def __init__(self) -> None:
        super().__init__("refused by policy")


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for ``host``, in its order of preference."""
    if (literal := literal_address(host)) is not None:
        return [literal]  # what the resolver would answer, without its thread
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = literal_address(str(sockaddr[0]))
        if address is not None and address not in addresses:
            addresses.append(address)
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: EgressPolicy, resolver: Resolver = resolve) -> None:
        self.policy = policy
        self.resolver = resolver
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self.resolver(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout("name resolution timed out") from None
        except OSError:
            raise httpcore.ConnectError("name not resolved") from None
        if not addresses:
            raise httpcore.ConnectError("name not resolved")
        if not self.policy.allows_host(host) and not all(map(self.policy.permits, addresses)):
            raise EgressRefused
        *others, last = addresses
        for address in others:
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError:
                continue  # the next address may answer
        return await self.inner.connect_tcp(str(last), port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused  # a local socket is never an outbound target

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(
        self,
        policy: EgressPolicy,
        *,
        limits: httpx.Limits,
        tls: ssl.SSLContext,
        resolver: Resolver = resolve,
    ) -> None:
        super().__init__(verify=tls, trust_env=False, limits=limits)
        # httpx 0.28 cannot hand its connection pool a network backend (encode/httpx discussion
        # 3180, pull request 3749), so the pool it built above is replaced by the same pool
        # (no proxy: a proxy would be the only address checked) on the guarded backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=tls,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver),
        )


def tls_context() -> ssl.SSLContext:
    """Certificate checks against certifi's roots; made once and shared, as loading them is slow."""
    return httpx.create_ssl_context(trust_env=False)


def guarded_client(
    policy: EgressPolicy,
    *,
    timeout_s: float,
    max_connections: int,
    tls: ssl.SSLContext | None = None,
    resolver: Resolver = resolve,
) -> httpx.AsyncClient:
    """A client for untrusted URLs: guarded connections, no proxies from the environment, and no
    redirects followed (a redirect is an answer like any other, not a new target)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    transport = GuardedTransport(policy, limits=limits, tls=tls or tls_context(), resolver=resolver)
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,
    )
