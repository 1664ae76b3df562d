"""Two qapp hosts and a Redis host, each in a network namespace of its own: the race lab's
cross-host claims on separate network stacks, and one host's link to the store cut mid-load.

Layout (10.77.x.0/24 links, traffic never leaves the machine)::

    this machine ──client link── host a ──store link──┐
         │      └──client link── host b ──store link──┤ store (redis-server)
         └─────────────admin link─────────────────────┘

Each host runs ``qapp serve`` with 2 workers; the store link of host a can
be cut (its veth taken down) while host b's stays up. Without root (or
``ip``) the module fails with the reason: it is never skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from harness.netns import Link, NetnsError, Network
from qapp.testing import HypercornServer, RedisServer
from tests.loadgen import Answer, Load, http
from tests.test_race_deploy import burst, by_worker

pytestmark = pytest.mark.slow

#: Requests per burst, split over the two hosts.
N = 200
#: Seconds host a may take to serve again once its link is back.
RECOVERY_BOUND = 5.0
#: Seconds after the cut by which every answer of host a is a 503: a command
#: already sent waits out redis-py's socket_timeout (5 s) first.
CUT_SETTLES = 7.0


@dataclass
class Hosts:
    """The running layout: the two qapp hosts, the store, and host a's store link."""

    net: Network
    a: HypercornServer
    b: HypercornServer
    store: RedisServer
    a_store: Link


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    """Namespaces a, b and store; redis-server in store; qapp (2 workers) in a and in b."""
    with Network() as net:
        try:
            a, b, store = net.host("a"), net.host("b"), net.host("store")
            to_a, to_b, to_store = net.link(None, a), net.link(None, b), net.link(None, store)
            a_store, b_store = net.link(a, store), net.link(b, store)
        except NetnsError as exc:
            pytest.fail(f"network namespaces are needed here and cannot be made: {exc}")
        # Bound to every address of its namespace: reached from a, b and this machine.
        redis_server = RedisServer(
            host=to_store.addr_b,
            prefix=net.prefix(store),
            extra=["--bind", "0.0.0.0", "--protected-mode", "no"],
        )
        servers = []
        for name, namespace, client_link, store_link in (
            ("a", a, to_a, a_store),
            ("b", b, to_b, b_store),
        ):
            instance = tmp_path_factory.mktemp(f"host-{name}")
            env = {
                "QAPP_STORE_URL": f"redis://{store_link.addr_b}:{redis_server.port}/0",
                "QAPP_INSTANCE_PATH": str(instance),
            }
            servers.append(
                HypercornServer(
                    workers=2, env=env, host=client_link.addr_b, prefix=net.prefix(namespace)
                )
            )
        with redis_server, servers[0] as server_a, servers[1] as server_b:
            yield Hosts(net, server_a, server_b, redis_server, a_store)


async def both_hosts(hosts: Hosts, strategy: str) -> list[dict[str, Any]]:
    """N/2 increments to each host at once, after a reset; the hosts' workers never overlap."""
    await burst(hosts.a.url, "DELETE", f"/counter/{strategy}", 1)
    on_a, on_b = await asyncio.gather(
        burst(hosts.a.url, "POST", f"/counter/{strategy}", N // 2),
        burst(hosts.b.url, "POST", f"/counter/{strategy}", N // 2),
    )
    return on_a + on_b


async def test_atomic_is_unique_across_two_hosts(hosts: Hosts) -> None:
    """atomic hands the requests of two hosts, on separate network stacks, exactly 1..N."""
    answers = await both_hosts(hosts, "atomic")
    assert sorted(a["value"] for a in answers) == list(range(1, N + 1))


async def test_locked_repeats_across_two_hosts(hosts: Hosts) -> None:
    """locked counts alone in each worker of each host, so the hosts hand out the same numbers."""
    answers = await both_hosts(hosts, "locked")
    numbers = by_worker(answers)
    assert len(numbers) >= 2
    for values in numbers.values():
        assert sorted(values) == list(range(1, len(values) + 1))
    assert Counter(a["value"] for a in answers)[1] == len(numbers)


def is_json_503(answer: Answer) -> bool:
    """A store-down answer in the project's shape: JSON, with Retry-After."""
    return (
        answer.status == 503
        and isinstance(answer.body, dict)
        and answer.body.get("error") == "store_unavailable"
        and answer.headers.get("content-type") == "application/json"
        and int(answer.headers.get("retry-after", "0")) >= 1
    )


async def test_cut_host_answers_503_while_the_other_serves(hosts: Hosts) -> None:
    """With host a's store link cut mid-load, host b keeps answering 200, host a answers JSON
    503s (none hangs), and host a serves again within seconds of the link coming back."""
    async with http(hosts.a.url, 40) as client_a, http(hosts.b.url, 40) as client_b:
        load_a = Load(client_a, "POST", "/counter/atomic", 40)
        load_b = Load(client_b, "POST", "/counter/atomic", 40)
        load_a.start()
        load_b.start()
        await asyncio.sleep(2)
        hosts.net.cut(hosts.a_store)
        cut = time.monotonic()
        try:
            await asyncio.sleep(CUT_SETTLES + 3)
        finally:
            hosts.net.restore(hosts.a_store)
        restored = time.monotonic()
        await asyncio.sleep(RECOVERY_BOUND + 3)
        on_a, on_b = await load_a.stop(), await load_b.stop()

    assert [a.error for a in on_a + on_b if a.error] == []
    assert {a.status for a in on_b} == {200}
    assert {a.status for a in on_a} <= {200, 503}
    assert all(is_json_503(a) for a in on_a if a.status == 503)
    assert all(a.ok for a in on_a if a.answered < cut)
    down = [a for a in on_a if cut + CUT_SETTLES < a.sent and a.answered < restored]
    assert down
    assert all(not a.ok for a in down)
    back = min(a.answered for a in on_a if a.ok and a.sent > restored)
    late = [a for a in on_a if a.sent > restored + RECOVERY_BOUND]
    assert late
    assert all(a.ok for a in late)
    print(
        f"\nlink cut: host a {Counter(a.status for a in on_a)}, host b "
        f"{Counter(a.status for a in on_b)}; a served again {back - restored:.2f} s after"
    )
