"""``cached`` and the lab's two new rows on real hypercorn workers, on SQLite and on Redis.

Single flight holds across 4 workers, and across two servers sharing one
Redis, with work three times the lock's lease; a stale value is answered at
once under steady load; the session dict loses increments that the atomic
session value keeps; cache-aside recomputes what ``cached`` computes once.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qapp.testing import HypercornServer, RedisServer
from tests.conftest import NO_LIMITS_ENV
from tests.test_race_deploy import burst

pytestmark = pytest.mark.slow

#: The memo's lease, and work three times as long: done once only if the lease is renewed.
#: 3 s, so that a renewal every third of it keeps the lease even when 1,000 requests
#: at once delay a worker's loop by a second on a slow 2-core machine.
LEASE = 3.0
WORK = 3 * LEASE
#: Concurrent cold requests for one memo key.
COLD = 1000
#: The refresh route's value: fresh this long, then stale while it is recomputed for this long.
#: The work is long, so that a caller who waited for it cannot pass for a slow answer.
REFRESH_TTL = 0.3
REFRESH_WORK = 2.5


def settings(store_url: str, instance: Path) -> dict[str, str]:
    """The environment of a server: its store, and the memo's and the lab's timings."""
    return {
        "QAPP_STORE_URL": store_url,
        "QAPP_INSTANCE_PATH": str(instance),
        "QAPP_MEMO_LEASE": str(LEASE),
        "QAPP_MEMO_WORK": str(WORK),
        "QAPP_MEMO_WAIT": "60",
        "QAPP_LAB_WORK": "0.5",
        "QAPP_LAB_REFRESH_TTL": str(REFRESH_TTL),
        "QAPP_LAB_REFRESH_WORK": str(REFRESH_WORK),
        # Thousands of requests from one address: past a client's quotas.
        **NO_LIMITS_ENV,
    }


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HypercornServer]:
    """hypercorn with 4 workers, on a SQLite file or on Redis, for the whole module."""
    instance = tmp_path_factory.mktemp(f"flight-{request.param}")
    if request.param == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        store_url = redis_server.url.rsplit("/", 1)[0] + "/5"
    else:
        store_url = f"sqlite://{instance / 'qapp.db'}"
    with HypercornServer(workers=4, env=settings(store_url, instance)) as server:
        yield server


@pytest.fixture(scope="module")
def two_hosts(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[HypercornServer, HypercornServer]]:
    """Two servers of 4 workers each, sharing one Redis database."""
    store_url = redis_server.url.rsplit("/", 1)[0] + "/6"
    servers = [
        HypercornServer(workers=4, env=settings(store_url, tmp_path_factory.mktemp(name)))
        for name in ("host-a", "host-b")
    ]
    with servers[0] as a, servers[1] as b:
        yield a, b


def assert_computed_once(answers: list[dict[str, Any]]) -> None:
    """Every answer carries the value of computation 1, and exactly one says it computed."""
    assert [a["cached"] for a in answers].count(False) == 1
    assert {a["computations"] for a in answers} == {1}
    assert len({a["value"]["computed_at"] for a in answers}) == 1


async def test_memo_long_work_computed_once_on_4_workers(deployment: HypercornServer) -> None:
    """1,000 concurrent cold requests on 4 workers, work 3 leases long: exactly 1 computation."""
    key = f"cold-{secrets.token_hex(4)}"
    answers = await burst(deployment.url, "GET", f"/memo/{key}", COLD)
    assert_computed_once(answers)
    assert len({a["value"]["worker"] for a in answers}) == 1
    (after,) = await burst(deployment.url, "GET", f"/memo/{key}", 1)
    assert (after["cached"], after["computations"]) == (True, 1)


# Single flight holds while its holder renews the lease in time; a machine
# starved by another test could delay a renewal past it.
@pytest.mark.serial
async def test_memo_long_work_computed_once_on_two_hosts(
    two_hosts: tuple[HypercornServer, HypercornServer],
) -> None:
    """1,000 cold requests split over two servers (8 workers) on one Redis: 1 computation."""
    a, b = two_hosts
    key = f"cold-{secrets.token_hex(4)}"
    on_a, on_b = await asyncio.gather(
        burst(a.url, "GET", f"/memo/{key}", COLD // 2),
        burst(b.url, "GET", f"/memo/{key}", COLD // 2),
    )
    assert_computed_once(on_a + on_b)
    # The value computed on one host is what the other host's clients got.
    assert {x["value"]["worker"] for x in on_a} == {x["value"]["worker"] for x in on_b}


@pytest.mark.serial
async def test_stale_value_never_makes_anyone_wait(deployment: HypercornServer) -> None:
    """Steady load across many expiries: no answer waits for the work, ≤ 1 computation each."""
    first = (await burst(deployment.url, "GET", "/lab/refresh/stale", 1))[0]
    latencies: list[float] = []
    answers: list[dict[str, Any]] = []
    began = time.monotonic()
    until = began + 8.0

    async def lane(client: httpx.AsyncClient) -> None:
        while time.monotonic() < until:
            sent = time.monotonic()
            response = await client.get(f"{deployment.url}/lab/refresh/stale")
            latencies.append(time.monotonic() - sent)
            assert response.status_code == 200
            answers.append(response.json())

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(lane(client) for _ in range(8)))
    elapsed = time.monotonic() - began
    assert len(answers) > 100
    assert max(latencies) < REFRESH_WORK  # nobody waited for a recomputation
    assert all(a["cached"] for a in answers)  # the computations ran in the background
    assert any(a["stale"] for a in answers)
    last = max(a["computation"] for a in answers)
    # Refreshed (several expiries passed), and at most once per expiry.
    assert last - first["computation"] >= 2
    assert last - first["computation"] <= elapsed / REFRESH_TTL + 1


async def one_client_burst(url: str, strategy: str, n: int) -> tuple[int, list[int]]:
    """Reset one client's session counters, fire ``n`` increments with its cookie at once.

    Returns how far the counter moved and the numbers the answers carried.
    """
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        reset = await client.post("/lab/session/reset")
        assert reset.status_code == 200
        assert client.cookies.get("session")
        answers = await asyncio.gather(*(client.post(f"/lab/session/{strategy}") for _ in range(n)))
        assert {a.status_code for a in answers} == {200}
        workers = {a.json()["worker"] for a in answers}
        assert len(workers) >= 2, "one worker took the whole burst"
        final = (await client.get("/lab/session")).json()[strategy]
        return final, [a.json()["value"] for a in answers]


async def test_session_dict_loses_increments(deployment: HypercornServer) -> None:
    """100 concurrent increments of a counter in the session dict, one cookie: most are lost."""
    final, values = await one_client_burst(deployment.url, "naive", 100)
    assert final < 100
    assert len(set(values)) < 100  # answers repeat the numbers they wrote


async def test_atomic_session_value_loses_none(deployment: HypercornServer) -> None:
    """100 concurrent ``session.incr`` with one cookie, on 4 workers: exactly +100."""
    final, values = await one_client_burst(deployment.url, "atomic", 100)
    assert final == 100
    assert sorted(values) == list(range(1, 101))


async def test_cache_aside_stampedes_single_flight_does_not(deployment: HypercornServer) -> None:
    """300 concurrent cold reads of one key: cache-aside computes many times, cached once."""
    counts = {}
    for strategy in ("naive", "cached"):
        key = f"cold-{secrets.token_hex(4)}"
        answers = await burst(deployment.url, "GET", f"/lab/stampede/{strategy}/{key}", 300)
        assert len({a["worker"] for a in answers}) >= 2
        (count,) = await burst(
            deployment.url, "GET", f"/lab/stampede/{strategy}/{key}/computations", 1
        )
        counts[strategy] = count["computations"]
        computed = [a for a in answers if not a["cached"]]
        if strategy == "cached":
            assert len(computed) == 1
            assert {a["computation"] for a in answers} == {1}
    assert counts["naive"] > 1
    assert counts["cached"] == 1


def qapp_race(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``qapp race`` in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "qapp.tools.cli", "race", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "160"},  # room for the whole table
    )


def test_qapp_race_lab_rows(deployment: HypercornServer) -> None:
    """``qapp race --lab`` reports the dict row losing and the atomic and cached rows exact."""
    run = qapp_race(
        "--url", deployment.url, "--strategy", "none", "--lab", "sessions,stampede",
        "--requests", "100", "--concurrency", "100", "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["results"] == []
    rows = {(r["row"], r["strategy"]): r for r in report["lab"]}
    assert set(rows) == {
        ("sessions", "naive"),
        ("sessions", "atomic"),
        ("stampede", "naive"),
        ("stampede", "cached"),
    }
    for row in rows.values():
        assert (row["answers"], row["errors"]) == (100, 0)
        assert row["workers_seen"] >= 2
    assert rows["sessions", "naive"]["lost"] > 0
    assert (rows["sessions", "atomic"]["counted"], rows["sessions", "atomic"]["lost"]) == (100, 0)
    assert rows["stampede", "naive"]["recomputed"] > 0
    assert (rows["stampede", "cached"]["counted"], rows["stampede", "cached"]["recomputed"]) == (
        1,
        0,
    )


def test_qapp_race_without_lab_is_unchanged(deployment: HypercornServer) -> None:
    """Without ``--lab`` the JSON has no lab rows, and ``--strategy none`` alone is refused."""
    run = qapp_race("--url", deployment.url, "--strategy", "atomic", "--requests", "20", "--json")
    assert run.returncode == 0, run.stderr
    assert set(json.loads(run.stdout)) == {"requests", "concurrency", "results"}
    refused = qapp_race("--url", deployment.url, "--strategy", "none")
    assert refused.returncode == 2
    assert "nothing to race" in refused.stderr
    table = qapp_race(
        "--url", deployment.url, "--strategy", "none", "--lab", "stampede", "--requests", "20"
    )
    assert table.returncode == 0, table.stderr
    assert "qapp race --lab" in table.stdout
    assert "recomputed" in table.stdout
