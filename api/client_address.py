"""Who is asking: the client address that failed authentications and anonymous requests are
counted against.

The socket peer is the client, unless ``JETFLOW_TRUSTED_PROXIES`` names it: only a proxy the
operator runs may say whom it forwards for, since anyone else can write any ``X-Forwarded-For``
and so pick a fresh address for every guess. Behind trusted proxies the client is the right-most
``X-Forwarded-For`` entry that is not one of them: each proxy appends the address it saw, so
everything left of that entry came from the client and proves nothing.

Kept free of Litestar so that ``api.settings`` can check the setting at start-up cheaply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

Network = IPv4Network | IPv6Network


def _address(text: str) -> IPv4Address | IPv6Address | None:
    """An address in its one spelling (an IPv4-mapped IPv6 address as IPv4); None if ``text``
    is not one."""
    try:
        address = ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The peers whose ``X-Forwarded-For`` is believed; none by default."""

    def __init__(self, networks: tuple[Network, ...] = ()) -> None:
        self.networks = networks

    def __repr__(self) -> str:
        return f"TrustedProxies({', '.join(str(n) for n in self.networks)})"

    @classmethod
    def parse(cls, value: str) -> TrustedProxies:
        """``JETFLOW_TRUSTED_PROXIES``: comma-separated addresses and CIDRs."""
        networks: list[Network] = []
        for entry in (e.strip() for e in value.split(",")):
            if not entry:
                continue
            try:
                networks.append(ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                raise ValueError(
                    f"JETFLOW_TRUSTED_PROXIES: {entry!r} is neither an address nor a network"
                ) from None
        return cls(tuple(networks))

    def trusts(self, host: str) -> bool:
        address = _address(host)
        return address is not None and any(address in network for network in self.networks)

    def client(self, scope: Mapping[str, Any]) -> str:
        """The client address of an ASGI ``scope``, by the rule in the module docstring."""
        peer = scope.get("client")
        host = str(peer[0]) if peer else "unknown"
        if not self.trusts(host):
            return _spelled(host)
        entries = _forwarded_for(scope.get("headers", ()))
        for entry in reversed(entries):
            if not self.trusts(entry):
                return _spelled(entry)
        # Every hop is a trusted proxy (or the header is missing): the farthest one is asking.
        return _spelled(entries[0]) if entries else _spelled(host)


def _forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Every ``X-Forwarded-For`` entry in order; repeated headers are one list (RFC 9110)."""
    values = [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]
    return [entry.strip() for entry in ",".join(values).split(",") if entry.strip()]


def _spelled(host: str) -> str:
    """One key per client whatever the spelling; a value that is no address is kept as sent
    (only a trusted proxy's entry can be one, and it is the proxy's to spell)."""
    address = _address(host)
    return host if address is None else str(address)
