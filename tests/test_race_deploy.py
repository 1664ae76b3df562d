"""The race lab on real workers (hypercorn and granian): every cell of its table, two hosts."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from qapp.testing import HypercornServer, PostgresServer, RedisServer

pytestmark = pytest.mark.slow

#: Concurrent requests per burst, each on its own connection.
N = 300


async def burst(url: str, method: str, path: str, n: int) -> list[dict[str, Any]]:
    """Send ``n`` requests on ``n`` fresh connections, all released at the same moment.

    Every connection is opened first and only then does each get its request,
    in one tight loop. So the requests reach the workers together, as a real
    burst of clients does, instead of trickling in at the pace of a client
    that connects and sends one request at a time.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    connections = await asyncio.gather(*(asyncio.open_connection(host, port) for _ in range(n)))
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode()
    for _, writer in connections:
        writer.write(request)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        raw = await reader.read()  # Connection: close, so the answer ends at EOF.
        writer.close()
        await writer.wait_closed()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.split()[1] == b"200", raw
        return json.loads(body)

    return list(await asyncio.gather(*(answer(r, w) for r, w in connections)))


async def get_value(url: str, strategy: str) -> int:
    """The shared counter's value, as any worker reads it."""
    (body,) = await burst(url, "GET", f"/counter/{strategy}", 1)
    value: int = body["value"]
    return value


def by_worker(answers: list[dict[str, Any]]) -> dict[int, list[int]]:
    """The numbers each worker handed out."""
    numbers: dict[int, list[int]] = defaultdict(list)
    for answer in answers:
        numbers[answer["worker"]].append(answer["value"])
    return numbers


@pytest.fixture(scope="module", params=["hypercorn", "granian"])
def server_kind(request: pytest.FixtureRequest) -> str:
    """Which HTTP server ``qapp serve`` runs: every race below runs on both."""
    kind: str = request.param
    return kind


@pytest.fixture(scope="module", params=["sqlite", "redis", "postgresql"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, server_kind: str
) -> Iterator[HypercornServer]:
    """``qapp serve`` with 4 workers from hypercorn.toml, on a SQLite file, Redis or PostgreSQL.

    One server per backend for the whole module: every strategy has its own
    counter, and each test below runs its strategy once, from 0.
    """
    instance = tmp_path_factory.mktemp(f"race-{server_kind}-{request.param}")
    if request.param == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        store_url = redis_server.url.rsplit("/", 1)[0] + "/3"
    elif request.param == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        postgres.empty_store()
        store_url = postgres.url
    else:
        store_url = f"sqlite://{instance / 'race.db'}"
    env = {"QAPP_STORE_URL": store_url, "QAPP_INSTANCE_PATH": str(instance)}
    with HypercornServer(workers=4, env=env, server=server_kind) as server:
        yield server


async def fresh_burst(server: HypercornServer, strategy: str) -> list[dict[str, Any]]:
    """Reset ``strategy``'s shared counter, fire N increments, check that the load spread."""
    await burst(server.url, "DELETE", f"/counter/{strategy}", 1)
    answers = await burst(server.url, "POST", f"/counter/{strategy}", N)
    assert len(by_worker(answers)) >= 2, "one worker took the whole burst"
    return answers


@pytest.mark.parametrize("strategy", ["atomic", "shared-locked"])
async def test_shared_correct_strategies_count_exactly_across_workers(
    deployment: HypercornServer, strategy: str
) -> None:
    """atomic and shared-locked hand 300 requests on 4 workers exactly 1..300."""
    answers = await fresh_burst(deployment, strategy)
    assert sorted(a["value"] for a in answers) == list(range(1, N + 1))
    assert await get_value(deployment.url, strategy) == N


async def test_locked_is_exact_per_worker_but_repeats_across_workers(
    deployment: HypercornServer,
) -> None:
    """locked counts 1..n exactly inside each worker, so several workers repeat numbers."""
    answers = await fresh_burst(deployment, "locked")
    numbers = by_worker(answers)
    for values in numbers.values():
        assert sorted(values) == list(range(1, len(values) + 1))
    # Each of the (at least two) workers handed out 1: repeats are certain.
    assert Counter(a["value"] for a in answers)[1] == len(numbers)
    assert len({a["value"] for a in answers}) < N


async def test_unsafe_loses_updates_in_each_worker(deployment: HypercornServer) -> None:
    """unsafe hands the same number to several requests of one worker: updates are lost."""
    answers = await fresh_burst(deployment, "unsafe")
    # A worker's counter starts at 0 and only ever holds numbers it handed
    # out, so its answers are 1..max. If every increment had stuck they would
    # be 1..n, each once; a number handed out twice by one worker therefore
    # means an increment of that worker was lost. The burst releases about 75
    # requests per worker at once; those a worker reads in the same loop turn
    # run in lockstep and read the same number, so repeats are what a burst
    # like this produces, not a rare interleaving.
    repeats = {
        worker: len(values) - len(set(values)) for worker, values in by_worker(answers).items()
    }
    assert sum(repeats.values()) > 0, repeats
    assert len({a["value"] for a in answers}) < N


async def test_shared_unsafe_loses_updates_across_workers(deployment: HypercornServer) -> None:
    """shared-unsafe ends below 300 after 300 answered increments, and repeats numbers."""
    answers = await fresh_burst(deployment, "shared-unsafe")
    # The requests a worker reads in one loop turn queue their store reads
    # together, before any of them writes: they read the same number.
    final = await get_value(deployment.url, "shared-unsafe")
    assert final < N
    assert len({a["value"] for a in answers}) < N


@pytest.fixture(scope="module")
def two_hosts(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, server_kind: str
) -> Iterator[tuple[HypercornServer, HypercornServer]]:
    """Two separate servers on two ports, 2 workers each, sharing one Redis."""
    store_url = redis_server.url.rsplit("/", 1)[0] + "/4"
    servers = []
    for name in ("host-a", "host-b"):
        instance: Path = tmp_path_factory.mktemp(f"{name}-{server_kind}")
        env = {"QAPP_STORE_URL": store_url, "QAPP_INSTANCE_PATH": str(instance)}
        servers.append(HypercornServer(workers=2, env=env, server=server_kind))
    with servers[0] as a, servers[1] as b:
        yield a, b


async def both_hosts(
    hosts: tuple[HypercornServer, HypercornServer], strategy: str
) -> list[dict[str, Any]]:
    """N/2 increments to each host at the same time."""
    a, b = hosts
    await burst(a.url, "DELETE", f"/counter/{strategy}", 1)
    on_a, on_b = await asyncio.gather(
        burst(a.url, "POST", f"/counter/{strategy}", N // 2),
        burst(b.url, "POST", f"/counter/{strategy}", N // 2),
    )
    # Worker pids are distinct across the two servers (one machine), so they
    # also tell the hosts apart.
    assert not {x["worker"] for x in on_a} & {x["worker"] for x in on_b}
    return on_a + on_b


async def test_atomic_stays_unique_across_two_hosts(
    two_hosts: tuple[HypercornServer, HypercornServer],
) -> None:
    """atomic on one shared Redis hands two servers' requests exactly 1..300 between them."""
    answers = await both_hosts(two_hosts, "atomic")
    assert sorted(a["value"] for a in answers) == list(range(1, N + 1))


async def test_locked_repeats_across_two_hosts(
    two_hosts: tuple[HypercornServer, HypercornServer],
) -> None:
    """locked counts alone on each worker of each host, so two hosts hand out the same numbers."""
    answers = await both_hosts(two_hosts, "locked")
    numbers = by_worker(answers)
    assert len(numbers) >= 2
    for values in numbers.values():
        assert sorted(values) == list(range(1, len(values) + 1))
    assert Counter(a["value"] for a in answers)[1] == len(numbers)
