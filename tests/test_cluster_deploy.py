"""Redis Cluster under real load: exact counters over every slot range from 4 processes, and
a master killed under HTTP load costs only its own keys, only until its replica takes over.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis.crc import key_slot

from harness.topologies import RedisCluster
from qapp.state import open_store
from qapp.testing import KEEPALIVE_EXPIRY, HypercornServer
from tests.topology_fixtures import redis_cluster

__all__ = ["redis_cluster"]

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
#: Slot bands of 1,024 slots: two keys in each, so every master's range is hit.
BANDS = 16
PROCESSES = 4
INCREMENTS = 10_000

#: One worker process: its share of the increments, 50 at a time, over all keys.
INCREMENTER = """
import asyncio, json, sys
from qapp.state import open_store

async def main(url, keys, count):
    async with await open_store(url) as store:
        lanes, results = 50, []
        async def lane(n):
            for i in range(n, count, lanes):
                key = keys[i % len(keys)]
                results.append((key, await store.incr(key)))
        await asyncio.gather(*(lane(n) for n in range(lanes)))
    json.dump(results, sys.stdout)

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])))
"""


def keys_in_every_band(stored: str, per_band: int = 2) -> list[str]:
    """Keys whose Redis key (``stored`` with ``{}`` for the key) covers every band of slots."""
    found: dict[int, list[str]] = defaultdict(list)
    n = 0
    while any(len(found[band]) < per_band for band in range(BANDS)):
        key = f"k{n}"
        band = key_slot(stored.format(key).encode()) * BANDS // 16384
        if len(found[band]) < per_band:
            found[band].append(key)
        n += 1
    return [key for band in range(BANDS) for key in found[band]]


def test_ten_thousand_increments_over_every_slot_range(redis_cluster: RedisCluster) -> None:
    """10,000 increments from 4 processes over keys in all 16 slot bands: every key's answers
    are exactly 1..n, and each key ends at n: 0 lost, 0 repeated."""
    keys = keys_in_every_band("qapp:k:{{{}}}")
    share = INCREMENTS // PROCESSES
    children = [
        subprocess.Popen(
            [sys.executable, "-c", INCREMENTER, redis_cluster.url, json.dumps(keys), str(share)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(PROCESSES)
    ]
    answers: dict[str, list[int]] = defaultdict(list)
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        for key, value in json.loads(out):
            answers[key].append(value)
    assert sum(len(values) for values in answers.values()) == INCREMENTS
    masters = {redis_cluster.master_of(f"qapp:k:{{{key}}}").port for key in keys}
    assert len(masters) == 3

    async def finals() -> dict[str, object]:
        async with await open_store(redis_cluster.url) as store:
            return {key: await store.get(key) for key in keys}

    stored = asyncio.run(finals())
    for key, values in answers.items():
        assert sorted(values) == list(range(1, len(values) + 1)), key
        assert stored[key] == len(values)
    redis_cluster.flushall()


@dataclass(frozen=True)
class Read:
    """One GET of a key: when it was sent and answered, and what came back."""

    key: str
    sent: float
    answered: float
    status: int
    json_503: bool = False


@pytest.fixture(scope="module")
def cluster_web(
    redis_cluster: RedisCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HypercornServer]:
    """4 qapp workers on the cluster (last in this module: its test kills a master)."""
    instance = tmp_path_factory.mktemp("cluster-web")
    env = {"QAPP_STORE_URL": redis_cluster.url, "QAPP_INSTANCE_PATH": str(instance)}
    with HypercornServer(workers=4, env=env) as web:
        yield web


async def read_loop(
    client: httpx.AsyncClient, keys: list[str], stop: asyncio.Event, reads: list[Read], lane: int
) -> None:
    """GET /cache/<key> over ``keys`` in turn until stopped, recording every answer."""
    n = lane
    while not stop.is_set():
        key = keys[n % len(keys)]
        n += 1
        sent = time.monotonic()
        try:
            response = await client.get(f"/cache/{key}")
        except httpx.HTTPError:
            reads.append(Read(key, sent, time.monotonic(), 0))
            continue
        json_503 = (
            response.status_code == 503
            and response.headers.get("content-type") == "application/json"
            and int(response.headers.get("retry-after", "0")) >= 1
        )
        reads.append(Read(key, sent, time.monotonic(), response.status_code, json_503))
        if response.status_code != 200:
            await asyncio.sleep(0.02)


async def test_killed_master_costs_only_its_keys_until_its_replica_takes_over(
    redis_cluster: RedisCluster, cluster_web: HypercornServer
) -> None:
    """Under 100 clients reading keys of all 3 masters, a killed master's keys answer JSON
    503s until its replica takes over, then 200s; the other masters' keys answer 200 throughout."""
    keys = keys_in_every_band("qapp:k:{{cache:{}}}", per_band=1)
    async with await open_store(redis_cluster.url) as store:
        for key in keys:
            await store.namespace("cache").set(key, {"value": key})
    victim = redis_cluster.master_of(f"qapp:k:{{cache:{keys[0]}}}")
    on_victim = {k for k in keys if redis_cluster.master_of(f"qapp:k:{{cache:{k}}}") is victim}
    reads: list[Read] = []
    stop = asyncio.Event()
    limits = httpx.Limits(
        max_connections=100, max_keepalive_connections=100, keepalive_expiry=KEEPALIVE_EXPIRY
    )
    async with httpx.AsyncClient(base_url=cluster_web.url, timeout=15, limits=limits) as client:
        lanes = [asyncio.create_task(read_loop(client, keys, stop, reads, n)) for n in range(100)]
        await asyncio.sleep(2)
        victim.kill()
        killed = time.monotonic()
        taken_over = await asyncio.to_thread(redis_cluster.wait_failover, victim)
        await asyncio.sleep(5)
        stop.set()
        await asyncio.gather(*lanes)

    statuses = Counter(r.status for r in reads)
    print(f"\ncluster kill: {dict(statuses)}; takeover {taken_over - killed:.1f} s after the kill")
    assert set(statuses) <= {200, 503}
    assert all(r.json_503 for r in reads if r.status == 503)
    others = [r for r in reads if r.key not in on_victim]
    assert others
    assert {r.status for r in others} == {200}
    mine = [r for r in reads if r.key in on_victim]
    during = [r for r in mine if killed + 0.5 < r.sent and r.answered < taken_over]
    assert during
    assert {r.status for r in during} == {503}
    after = [r for r in mine if r.sent > taken_over + 3]
    assert after
    assert {r.status for r in after} == {200}
