"""Load on 4 real workers: 10,000 atomic increments, and 1,000 clients with a session counter each.

Times are printed, never asserted: speed is for benchmarks, and this
machine is shared. What is asserted is exactness under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from qapp.testing import KEEPALIVE_EXPIRY, HypercornServer, PostgresServer, RedisServer
from tests.conftest import NO_LIMITS_ENV
from tests.loadgen import REQUEST_TIMEOUT, Answer, http, send, values

pytestmark = pytest.mark.slow

INCREMENTS = 10_000
#: Requests in flight at once for the increments, each client on its own
#: connection. On 2 cores the test's own client is the bottleneck, and more
#: connections only cost it more CPU per request.
CONCURRENCY = 25
SESSION_CLIENTS = 1_000
#: inc or dec steps each session client takes after its first request.
STEPS = 3


@pytest.fixture(params=["sqlite", "redis", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> Iterator[HypercornServer]:
    """4 hypercorn workers on a fresh SQLite file, a database of its own in Redis, or PostgreSQL."""
    if request.param == "redis":
        store_url = redis_server.url.rsplit("/", 1)[0] + "/6"
        with redis.Redis.from_url(store_url) as client:
            client.flushdb()
    elif request.param == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        postgres.empty_store()
        store_url = postgres.url
    else:
        store_url = f"sqlite://{tmp_path / 'load.db'}"
    env = {"QAPP_STORE_URL": store_url, "QAPP_INSTANCE_PATH": str(tmp_path), **NO_LIMITS_ENV}
    with HypercornServer(workers=4, env=env) as running:
        yield running


async def test_10000_atomic_increments_over_4_workers(server: HypercornServer) -> None:
    """10,000 POST /counter/atomic, 100 at a time over 4 workers: 0 errors, 0 lost, 0 repeated."""
    answers: list[Answer] = []

    async def runner(client: httpx.AsyncClient, count: int) -> None:
        for _ in range(count):
            answers.append(await send(client, "POST", "/counter/atomic"))

    async with contextlib.AsyncExitStack() as stack:
        # A client of its own per runner, with one connection: httpx's pool
        # work per request grows with the connections it holds, and on 2
        # cores the client's CPU is the bottleneck. Connecting them one after
        # another (a /health each) spreads them over the workers; a burst of
        # connects tends to land on whichever worker accepts first.
        clients = [await stack.enter_async_context(http(server.url, 1)) for _ in range(CONCURRENCY)]
        for client in clients:
            assert (await send(client, "GET", "/health")).ok
        began = time.monotonic()
        async with asyncio.timeout(240):
            await asyncio.gather(*(runner(c, INCREMENTS // CONCURRENCY) for c in clients))
        took = time.monotonic() - began
        final = await send(clients[0], "GET", "/counter/atomic")
    assert len(answers) == INCREMENTS

    errors = [a for a in answers if not a.ok]
    numbers = values(answers)
    per_worker = Counter(a.body["worker"] for a in answers if a.ok)
    assert errors == []
    assert sorted(numbers) == list(range(1, INCREMENTS + 1))
    assert final.body["value"] == INCREMENTS
    # Several workers shared the load, so exactness held across processes.
    assert len(per_worker) > 1
    store = server.env["QAPP_STORE_URL"].split(":", 1)[0]
    print(
        f"\nload {store}: {INCREMENTS} atomic increments in {took:.2f} s "
        f"({INCREMENTS / took:.0f}/s), {CONCURRENCY} connections, per worker "
        f"{sorted(per_worker.values())}; 0 errors, 0 lost, 0 repeated"
    )


def raise_open_files(wanted: int) -> None:
    """Lift this process's soft limit on open files towards ``wanted`` (never past the hard one).

    The test holds one socket per client. Many systems start processes at a
    soft limit of 1024, which 1,000 clients plus the interpreter's own files
    exceed; the hard limit is what an unprivileged process may raise it to.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


# 1,000 clients in one process: beside another heavy test it can leave a
# connection unread past the server's idle close.
@pytest.mark.serial
async def test_1000_session_clients_each_count_exactly(tmp_path: Path) -> None:
    """1,000 concurrent clients, each with its own cookie and connection, end on exact counts."""
    raise_open_files(4096)
    # 1,000 new sessions from one address: past any sane per-client quota.
    env = {"QAPP_STORE_URL": f"sqlite://{tmp_path / 'sessions.db'}", **NO_LIMITS_ENV}
    env["QAPP_INSTANCE_PATH"] = str(tmp_path)
    rng = random.Random(6)
    plans = [[rng.choice((1, -1)) for _ in range(STEPS)] for _ in range(SESSION_CLIENTS)]
    # One TLS context for all clients: httpx would otherwise build (and load
    # CA certificates into) one per client, for plain-HTTP requests.
    tls = ssl.create_default_context()
    limits = httpx.Limits(
        max_connections=1, max_keepalive_connections=1, keepalive_expiry=KEEPALIVE_EXPIRY
    )

    async def one_client(url: str, plan: list[int]) -> tuple[int, int, set[str]]:
        """Start a session with inc, take the planned steps, read the counter back."""
        async with httpx.AsyncClient(
            base_url=url, timeout=REQUEST_TIMEOUT * 2, limits=limits, verify=tls
        ) as c:
            first = await c.post("/session/counter/inc")
            first.raise_for_status()
            cookie = first.cookies["session"]
            for step in plan:
                path = "/session/counter/inc" if step > 0 else "/session/counter/dec"
                (await c.post(path)).raise_for_status()
            final = await c.get("/session/counter")
            final.raise_for_status()
            return 1 + sum(plan), final.json()["counter"], {cookie}

    with HypercornServer(workers=4, env=env) as server:
        began = time.monotonic()
        async with asyncio.timeout(240):
            results = await asyncio.gather(*(one_client(server.url, plan) for plan in plans))
        took = time.monotonic() - began

    assert [got for _, got, _ in results] == [expected for expected, _, _ in results]
    cookies = set().union(*(cookie for _, _, cookie in results))
    assert len(cookies) == SESSION_CLIENTS
    requests = SESSION_CLIENTS * (STEPS + 2)
    print(
        f"\nload sessions: {SESSION_CLIENTS} concurrent clients, {requests} requests "
        f"in {took:.2f} s; every final count exact"
    )
