"""Who the client is: the X-Forwarded-For walk through trusted proxies, and the key limits use.

In process through Quart's test client and httpx (:mod:`tests.appclients`)
on the small app of :mod:`tests.user_app`, whose ``/whoami`` says what
:func:`~qapp.ext.client.client_address` and :func:`~qapp.ext.client.client_key`
make of a request; ``/metrics`` must read the client the same way. Then the
same against real hypercorn workers.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart

from qapp.ext.client import parse_hop
from qapp.state import ConfigurationError
from qapp.testing import HypercornServer
from tests.appclients import CLIENT_KINDS, Send, sender
from tests.user_app import create_app

ROOT = Path(__file__).resolve().parents[1]

#: The proxies the app trusts: the loopback peer and a private network behind it.
PROXIES = "127.0.0.1, 10.0.0.0/8"

XFF = "X-Forwarded-For"

#: (header lines, the client the walk finds), the peer being 127.0.0.1 (trusted).
WALKS: list[tuple[list[str], str]] = [
    ([], "127.0.0.1"),
    (["203.0.113.9"], "203.0.113.9"),
    # An address the client wrote itself, left of the proxy's, is not believed.
    (["1.2.3.4, 203.0.113.9"], "203.0.113.9"),
    # Lines join in order: the client's own line first, the proxy's appended after.
    (["127.0.0.5", "203.0.113.9"], "203.0.113.9"),
    (["1.2.3.4", "203.0.113.9, 10.1.1.1"], "203.0.113.9"),
    (["203.0.113.9", "10.1.1.1", "10.2.2.2"], "203.0.113.9"),
    # Ports dropped, spaces and empty elements ignored.
    (["203.0.113.9:5678"], "203.0.113.9"),
    (["[2001:db8::7]:80"], "2001:db8::7"),
    ([",203.0.113.9 ,, 10.1.1.1,"], "203.0.113.9"),
    # An IPv4-mapped IPv6 address is the IPv4 address, trusted or not.
    (["::ffff:203.0.113.9"], "203.0.113.9"),
    (["203.0.113.9, ::ffff:10.1.1.1"], "203.0.113.9"),
    # A hop that is no address ends the walk at the last trusted address.
    (["garbage"], "127.0.0.1"),
    (["203.0.113.9, unknown, 10.1.1.1"], "10.1.1.1"),
    (["203.0.113.9, 1.2.3.4:99999, 10.1.1.1"], "10.1.1.1"),
    (["203.0.113.9, [1.2.3.4]:80"], "127.0.0.1"),
    # Only trusted proxies: the left-most of them.
    (["10.1.1.1, 10.2.2.2"], "10.1.1.1"),
]


@pytest.mark.parametrize(
    ("hop", "address"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:5678", "1.2.3.4"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("[::ffff:1.2.3.4]:80", "1.2.3.4"),
    ],
)
def test_hops_parse_as_addresses_without_their_port(hop: str, address: str) -> None:
    """A hop is an address, with its port dropped and an IPv4-mapped address unmapped."""
    assert parse_hop(hop) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    "hop",
    [
        "",
        "unknown",
        "example.com",
        "_hidden",
        "1.2.3",
        "1.2.3.4:",
        "1.2.3.4:99999",
        "1.2.3.4:８０",
        "[1.2.3.4]:80",
        "[2001:db8::1",
        "[2001:db8::1]80",
        "2001:db8::1:80:x",
        "fe80::1%eth0",
    ],
)
def test_other_hops_are_not_addresses(hop: str) -> None:
    """A hop that is not strictly an address (and port) parses as None."""
    assert parse_hop(hop) is None


def settings(tmp_path: Path, **more: Any) -> dict[str, Any]:
    """The app's settings: its own SQLite file, a key, the two trusted proxies and metrics on."""
    return {
        "QAPP_STORE_URL": f"sqlite://{tmp_path / 'qapp.db'}",
        "QAPP_SECRET_KEY": secrets.token_urlsafe(32),
        "QAPP_TRUSTED_PROXIES": PROXIES,
        "QAPP_METRICS": "1",
        **more,
    }


@pytest.fixture
async def user_app(tmp_path: Path) -> AsyncIterator[Quart]:
    """The user app, started, behind the trusted proxies."""
    app = create_app(tmp_path / "instance", settings(tmp_path))
    async with app.test_app():
        yield app


@pytest.fixture(params=CLIENT_KINDS)
def send(request: pytest.FixtureRequest, user_app: Quart) -> Send:
    """Requests through the user app, by Quart's test client and by httpx in turn."""
    return sender(user_app, request.param)


async def whoami(send: Send, lines: list[str], peer: str = "127.0.0.1") -> dict[str, str]:
    """What the app makes of a request with these X-Forwarded-For lines from ``peer``."""
    answer = await send("GET", "/whoami", [(XFF, line) for line in lines], peer)
    assert answer.status == 200, answer
    found: dict[str, str] = answer.json
    return found


@pytest.mark.parametrize(("lines", "client"), WALKS)
async def test_the_walk_finds_the_first_untrusted_hop_from_the_right(
    send: Send, lines: list[str], client: str
) -> None:
    """From a trusted peer, the client is the first untrusted hop from the right of all lines."""
    assert (await whoami(send, lines))["address"] == client


async def test_the_header_of_an_untrusted_peer_is_ignored(send: Send) -> None:
    """From a peer that is no trusted proxy, X-Forwarded-For changes nothing."""
    found = await whoami(send, ["203.0.113.9"], peer="198.51.100.1")
    assert found == {"address": "198.51.100.1", "key": "198.51.100.1"}


async def test_an_ipv4_mapped_peer_is_its_ipv4_address(send: Send) -> None:
    """A peer ::ffff:127.0.0.1 is 127.0.0.1: a trusted proxy whose header counts."""
    assert (await whoami(send, [], peer="::ffff:127.0.0.1"))["address"] == "127.0.0.1"
    assert (await whoami(send, ["203.0.113.9"], peer="::ffff:127.0.0.1"))["address"] == (
        "203.0.113.9"
    )


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_without_trusted_proxies_the_peer_is_the_client(tmp_path: Path, kind: str) -> None:
    """With no QAPP_TRUSTED_PROXIES, X-Forwarded-For is never read."""
    app = create_app(tmp_path, settings(tmp_path, QAPP_TRUSTED_PROXIES=""))
    async with app.test_app():
        found = await whoami(sender(app, kind), ["203.0.113.9"])
    assert found["address"] == "127.0.0.1"


async def test_ipv6_clients_are_keyed_by_their_64(send: Send) -> None:
    """An IPv6 client's key is its /64; an IPv4 client's, and a mapped one's, the address."""
    assert await whoami(send, ["2001:db8:1:2:aaaa::5"]) == {
        "address": "2001:db8:1:2:aaaa::5",
        "key": "2001:db8:1:2::/64",
    }
    assert (await whoami(send, [], peer="2001:db8:1:2::9"))["key"] == "2001:db8:1:2::/64"
    assert (await whoami(send, ["::ffff:203.0.113.9"]))["key"] == "203.0.113.9"


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_the_ipv6_prefix_is_configurable(tmp_path: Path, kind: str) -> None:
    """QAPP_IPV6_PREFIX=48 keys an IPv6 client by its /48."""
    app = create_app(tmp_path, settings(tmp_path, QAPP_IPV6_PREFIX="48"))
    async with app.test_app():
        found = await whoami(sender(app, kind), ["2001:db8:1:2::5"])
    assert found["key"] == "2001:db8:1::/48"


@pytest.mark.parametrize("value", ["abc", "129", "-1", "64.5", True, 200])
def test_a_bad_ipv6_prefix_fails_at_startup(tmp_path: Path, value: object) -> None:
    """A QAPP_IPV6_PREFIX that is not 0 to 128 bits is a ConfigurationError at init."""
    with pytest.raises(ConfigurationError, match="QAPP_IPV6_PREFIX"):
        create_app(tmp_path, settings(tmp_path, QAPP_IPV6_PREFIX=value))


async def test_a_64_shares_one_rate_limit_budget(send: Send) -> None:
    """Addresses of one /64 spend one budget of a limit; another /64 has its own."""
    first = [(XFF, "2001:db8:5:5::1")]
    second = [(XFF, "2001:db8:5:5:ffff::2")]
    other = [(XFF, "2001:db8:5:6::1")]
    statuses = [(await send("POST", "/limited", h)).status for h in (first, second, first)]
    assert statuses == [200, 200, 429]
    assert (await send("POST", "/limited", other)).status == 200


async def test_a_mapped_address_shares_its_ipv4_budget(send: Send) -> None:
    """::ffff:203.0.113.7 and 203.0.113.7 spend one budget."""
    mapped = [(XFF, "::ffff:203.0.113.7")]
    plain = [(XFF, "203.0.113.7")]
    statuses = [(await send("POST", "/limited", h)).status for h in (mapped, plain, mapped)]
    assert statuses == [200, 200, 429]


async def test_a_forged_left_hop_shares_the_budget_of_the_real_client(send: Send) -> None:
    """A client that writes other addresses left of its own still spends its own budget."""
    statuses = [
        (await send("POST", "/limited", [(XFF, f"198.51.100.{n}"), (XFF, "203.0.113.8")])).status
        for n in range(3)
    ]
    assert statuses == [200, 200, 429]


#: (header lines, whether /metrics' loopback check lets the client in), peer 127.0.0.1.
METRICS_READERS: list[tuple[list[str], bool]] = [
    ([], True),
    (["203.0.113.9"], False),
    (["127.0.0.5", "203.0.113.9"], False),
    (["203.0.113.9", "127.0.0.1"], False),
    (["::ffff:127.0.0.1"], True),
    (["garbage"], True),
    (["203.0.113.9, garbage"], True),
]


@pytest.mark.parametrize(("lines", "allowed"), METRICS_READERS)
async def test_metrics_reads_the_client_as_the_limits_do(
    send: Send, lines: list[str], allowed: bool
) -> None:
    """/metrics lets in exactly the requests whose walked client is a loopback address."""
    answer = await send("GET", "/metrics", [(XFF, line) for line in lines])
    client = ipaddress.ip_address((await whoami(send, lines))["address"])
    assert client.is_loopback == allowed
    assert answer.status == (200 if allowed else 403), answer


# Against real hypercorn workers.


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypercornServer]:
    """The user app under 2 real hypercorn workers behind the trusted proxies, metrics on."""
    folder = tmp_path_factory.mktemp("client")
    env = {
        "QAPP_INSTANCE_PATH": str(folder),
        "QAPP_STORE_URL": f"sqlite://{folder / 'qapp.db'}",
        "QAPP_SECRET_KEY": secrets.token_urlsafe(32),
        "QAPP_TRUSTED_PROXIES": PROXIES,
        "QAPP_METRICS": "1",
    }
    with HypercornServer(workers=2, env=env, app="tests.user_app_asgi:app", cwd=ROOT) as running:
        yield running


@pytest.mark.slow
def test_live_forwarded_lines_are_walked_in_order(server: HypercornServer) -> None:
    """Under hypercorn, X-Forwarded-For lines are read as one list and walked from the right."""
    with httpx.Client(base_url=server.url) as client:
        for lines, expected in WALKS:
            answer = client.get("/whoami", headers=[(XFF, line) for line in lines])
            assert answer.status_code == 200, answer.text
            assert answer.json()["address"] == expected, lines


@pytest.mark.slow
def test_live_metrics_and_limits_agree_on_the_client(server: HypercornServer) -> None:
    """Under hypercorn, /metrics admits only a loopback walked client; limits count per /64."""
    with httpx.Client(base_url=server.url) as client:
        for lines, allowed in METRICS_READERS:
            answer = client.get("/metrics", headers=[(XFF, line) for line in lines])
            assert answer.status_code == (200 if allowed else 403), (lines, answer.text)
        statuses = [
            client.post("/limited", headers={XFF: f"2001:db8:77:1::{n}"}).status_code
            for n in range(1, 4)
        ]
        assert statuses == [200, 200, 429]
        key = client.get("/whoami", headers={XFF: "2001:db8:77:1::3"}).json()["key"]
        assert key == "2001:db8:77:1::/64"
