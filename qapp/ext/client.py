"""Who the client is: its address through trusted proxies, and the key its limits count under.

The client is its address as the connection shows it (the peer). Behind a
reverse proxy every client would share the proxy's address, so list the
proxies you trust in ``QAPP_TRUSTED_PROXIES`` (addresses or networks). Then
:func:`client_address` walks the proxy chain from the right:

1. every ``X-Forwarded-For`` header line, in the order received, joined
   into one list of hops (several lines mean the same as one line with
   their values joined by commas; empty elements are skipped);
2. each hop parsed strictly as an IP address, a port dropped
   (``1.2.3.4:5678``, ``[::1]:80``);
3. starting at the peer, past every trusted proxy, leftwards: the first
   hop that is not a trusted proxy is the client. An address a client wrote
   itself, further left, is never believed.

A hop that is not an address (``unknown``, a hostname, garbage) ends the
walk: nothing left of it can be checked, so the client is the last trusted
address the walk reached, the one that passed that hop on. IPv4-mapped IPv6
addresses (``::ffff:1.2.3.4``) are the IPv4 address throughout.

Limits and quotas count per :func:`client_key`: an IPv4 address alone, an
IPv6 address as its network of ``QAPP_IPV6_PREFIX`` bits (64 by default),
since one subscriber usually holds a whole /64 and could otherwise take a
fresh budget with each of its addresses.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from quart import has_websocket_context, request, websocket
from quart.wrappers import BaseRequestWebsocket

from qapp.ext.context import state_of
from qapp.state import ConfigurationError

__all__ = [
    "DEFAULT_IPV6_PREFIX",
    "Address",
    "Network",
    "client_address",
    "client_ip",
    "client_key",
    "ipv6_prefix",
    "parse_hop",
    "trusted_proxies",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IPv6 clients are counted by networks of this many bits (``QAPP_IPV6_PREFIX``).
DEFAULT_IPV6_PREFIX = 64

#: A port after an address: 1 to 5 ASCII digits (``str.isdigit`` would take "²").
_PORT = re.compile(r"[0-9]{1,5}")


def trusted_proxies(entries: Iterable[str] | str | None) -> tuple[Network, ...]:
    """Parse ``QAPP_TRUSTED_PROXIES``: addresses or networks, a list or comma-separated."""
    if not entries:
        return ()
    items = entries.split(",") if isinstance(entries, str) else list(entries)
    try:
        return tuple(
            ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip()
        )
    except ValueError as exc:
        raise ConfigurationError(f"QAPP_TRUSTED_PROXIES: {exc}") from None


def ipv6_prefix(value: object) -> int:
    """Parse ``QAPP_IPV6_PREFIX``: the bits of an IPv6 client's network, 0 to 128 (default 64)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_IPV6_PREFIX
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ConfigurationError(f"QAPP_IPV6_PREFIX must be a number of bits, not {value!r}")
    if isinstance(text, str) and not re.fullmatch(r"[0-9]{1,3}", text):
        raise ConfigurationError(f"QAPP_IPV6_PREFIX must be a number of bits, not {value!r}")
    bits = int(text)
    if not 0 <= bits <= 128:
        raise ConfigurationError(f"QAPP_IPV6_PREFIX must be 0 to 128, not {bits}")
    return bits


def _plain(address: Address) -> Address:
    """``address`` as limits see it: an IPv4-mapped IPv6 address as IPv4, no zone id."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address


def parse_hop(text: str) -> Address | None:
    """One hop of ``X-Forwarded-For`` as an address, its port dropped; None if it is not one.

    Strict: ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]`` and
    ``[2001:db8::1]:80``; nothing else (no hostnames, no IPv4 in brackets,
    no zone ids, no ports past 65535).
    """
    text = text.strip()
    want: type[Address] | None = None
    if text.startswith("["):
        inner, bracket, port = text[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and _valid_port(port[1:]))):
            return None
        text, want = inner, ipaddress.IPv6Address
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not _valid_port(port):
            return None
        text, want = host, ipaddress.IPv4Address
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if want is not None and not isinstance(address, want):
        return None
    return _plain(address)


def _valid_port(text: str) -> bool:
    return _PORT.fullmatch(text) is not None and int(text) <= 65535


def _connection() -> BaseRequestWebsocket:
    """The current request, or the current websocket's handshake."""
    return websocket if has_websocket_context() else request


def _peer() -> Address | None:
    """The connection's own peer address, or None (a Unix socket, a test client without one)."""
    peer = _connection().remote_addr
    if not peer:
        return None
    try:
        return _plain(ipaddress.ip_address(peer))
    except ValueError:
        return None


def _hops() -> list[str]:
    """Every ``X-Forwarded-For`` hop, left to right, over all of the header's lines in order."""
    return [
        hop.strip()
        for line in _connection().headers.getlist("X-Forwarded-For")
        for hop in line.split(",")
        if hop.strip()
    ]


def client_ip() -> Address | None:
    """The current request's client address, walked through trusted proxies; None if unknown."""
    current = _peer()
    if current is None:
        return None
    proxies: tuple[Network, ...] = state_of().trusted_proxies
    if not proxies or not _trusted(current, proxies):
        return current
    for hop in reversed(_hops()):
        address = parse_hop(hop)
        if address is None:
            # Nothing left of here can be checked: the last trusted proxy's
            # peer (the address it recorded) is as far as the walk can see.
            return current
        if not _trusted(address, proxies):
            return address
        current = address
    return current


def _trusted(address: Address, proxies: tuple[Network, ...]) -> bool:
    return any(address in network for network in proxies)


def client_address() -> str:
    """The current request's client address as text (see the module's rules).

    A peer that is no IP address (a Unix socket) is given as the server names it.
    """
    address = client_ip()
    if address is None:
        return _connection().remote_addr or "unknown"
    return str(address)


def client_key() -> str:
    """The key the current client's limits and quotas count under.

    An IPv4 address itself; an IPv6 address's network of ``QAPP_IPV6_PREFIX``
    bits, e.g. ``2001:db8:1:2::/64``.
    """
    address = client_ip()
    if address is None:
        return _connection().remote_addr or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        bits: int = state_of().ipv6_prefix
        return str(ipaddress.IPv6Network((int(address), bits), strict=False))
    return str(address)
