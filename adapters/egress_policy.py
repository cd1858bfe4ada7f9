"""Which addresses outbound calls (webhooks) may reach: public ones, and what the operator allowed.

Users choose callback URLs, so without a policy the service POSTs wherever it is told: to its own
loopback services, the private network behind it, the cloud metadata endpoint — and its delivery
log tells the sender what answered. Refused by default is every address that is not globally
routable (loopback, private, link-local, shared, documentation, reserved), multicast, and any IPv6
form carrying such an IPv4 address (mapped, NAT64, 6to4, Teredo). ``JETFLOW_WEBHOOK_ALLOW`` names
networks (CIDRs) and host names the operator opens again.

No DNS here: ``refused_at_sight`` answers what a URL shows by itself (at create time), and the
connection itself checks every resolved address (``adapters.egress_http``).
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

_NAT64 = IPv6Network("64:ff9b::/96")
_LOOPBACK = IPv4Address("127.0.0.1")
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*$")
# One part of an IPv4 address as inet_aton reads it: 0x-hexadecimal, 0-octal or decimal.
_INET_PART = re.compile(r"^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one stands for, where packets to it would reach that one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFF_FFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def is_public(address: IPAddress) -> bool:
    if isinstance(address, IPv6Address) and (inner := _embedded_ipv4(address)) is not None:
        return is_public(inner)
    return address.is_global and not address.is_multicast


def _inet_aton(text: str) -> IPv4Address | None:
    """An IPv4 address in any spelling the C resolver accepts (``0x7f000001``, ``2130706433``,
    ``0177.0.0.1``, ``127.1``): URL parsers disagree on these, the resolver does not."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_PART.match(p) for p in parts):
        return None
    numbers = [int(p, 0 if p[:2].lower() == "0x" else 8 if p[0] == "0" else 10) for p in parts]
    *leading, last = numbers
    if any(n > 0xFF for n in leading) or last >= 256 ** (4 - len(leading)):
        return None
    value = 0
    for n in leading:
        value = value << 8 | n
    return IPv4Address(value << 8 * (4 - len(leading)) | last)


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host spells out, brackets or not; None when the host is a name."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ip_address(bare)
    except ValueError:
        return _inet_aton(bare.rstrip("."))


def _name(host: str) -> str:
    return host.lower().rstrip(".")


class EgressPolicy:
    # A plain class, not a dataclass: Litestar's signature models inspect the fields of the
    # runtime's dataclasses, and msgspec cannot describe a union of two address classes.
    def __init__(self, networks: tuple[Network, ...] = (), hosts: frozenset[str] = frozenset()):
        self.networks = networks
        self.hosts = hosts

    def __repr__(self) -> str:
        return f"EgressPolicy(networks={self.networks!r}, hosts={sorted(self.hosts)!r})"

    @classmethod
    def parse(cls, allow: str) -> EgressPolicy:
        """``JETFLOW_WEBHOOK_ALLOW``: comma-separated CIDRs, addresses and host names."""
        networks: list[Network] = []
        hosts: set[str] = set()
        for entry in (e.strip() for e in allow.split(",")):
            if not entry:
                continue
            try:
                networks.append(ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if not _HOST_NAME.match(_name(entry)):
                    raise ValueError(
                        f"JETFLOW_WEBHOOK_ALLOW: {entry!r} is neither a network nor a host name"
                    ) from None
                hosts.add(_name(entry))
        return cls(tuple(networks), frozenset(hosts))

    def allows_host(self, host: str) -> bool:
        """The operator named this host: whatever it resolves to may be reached."""
        return _name(host) in self.hosts

    def permits(self, address: IPAddress) -> bool:
        if is_public(address):
            return True
        forms: list[IPAddress] = [address]
        if isinstance(address, IPv6Address) and (inner := _embedded_ipv4(address)) is not None:
            forms.append(inner)
        return any(form in network for form in forms for network in self.networks)

    def refused_at_sight(self, url: str) -> bool:
        """Whether the URL alone shows a refused target: an address in a refused range, in any
        spelling, or ``localhost``. A name is left to the connect-time check."""
        host = urlsplit(url).hostname
        if host is None:
            return True
        if self.allows_host(host):
            return False
        address = literal_address(host)
        if address is None:
            name = _name(host)
            if name != "localhost" and not name.endswith(".localhost"):
                return False
            address = _LOOPBACK  # RFC 6761: always the loopback interface
        return not self.permits(address)
