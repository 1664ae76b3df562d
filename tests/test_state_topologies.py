"""The conformance suite (tests/test_state.py) and fencing, on Redis Sentinel and Redis Cluster.

The classes are those of tests/test_state.py, tests/test_state_keyspace.py
and tests/test_fencing.py; only the ``store_url`` they get differs: a master
with two replicas behind three sentinels, and a cluster of three masters
with a replica each, each started once for this module. Plus what is
particular to these two: URLs, hash tags on Cluster, durable writes, scans
of every master, and a fenced holder paused past its lease on Cluster.
"""

from __future__ import annotations

import pytest
import redis
from redis.crc import key_slot

from harness.topologies import RedisCluster, RedisSentinel
from qapp.state import ConfigurationError, StoreUnavailable, open_store, store_from_url
from qapp.store.backends.redis_cluster import SLOTS, ClusterStore, fence_key
from qapp.store.backends.redis_sentinel import SentinelStore
from qapp.store.backends.redis_urls import Durability
from tests.test_cache_control import (
    test_clear_forgets_one_functions_values,
    test_invalidate_tag_forgets_every_value_with_it,
    test_method_of_a_class_is_cached_per_argument,
    test_refresh_recomputes_a_fresh_value,
    test_single_flight_holds_with_tags,
    test_unless_keeps_nothing,
)
from tests.test_codecs import test_dataclass_round_trips_exactly
from tests.test_fencing import ROUNDS, TestFencing, paused_holder_rounds
from tests.test_state import (
    TestAdd,
    TestDelete,
    TestIncr,
    TestLock,
    TestTTL,
    TestValues,
    test_namespaces_do_not_collide,
)
from tests.test_state_keyspace import TestClear, TestMany, TestScan, TestTTLLeft
from tests.topology_fixtures import cluster_url, redis_cluster, redis_sentinel, sentinel_url

__all__ = [
    "TestAdd",
    "TestClear",
    "TestDelete",
    "TestFencing",
    "TestIncr",
    "TestLock",
    "TestMany",
    "TestScan",
    "TestTTL",
    "TestTTLLeft",
    "TestValues",
    "cluster_url",
    "redis_cluster",
    "redis_sentinel",
    "sentinel_url",
    "test_clear_forgets_one_functions_values",
    "test_dataclass_round_trips_exactly",
    "test_invalidate_tag_forgets_every_value_with_it",
    "test_method_of_a_class_is_cached_per_argument",
    "test_namespaces_do_not_collide",
    "test_refresh_recomputes_a_fresh_value",
    "test_single_flight_holds_with_tags",
    "test_unless_keeps_nothing",
]

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sentinel", "cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of the Sentinel store, then of the Cluster store."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def test_urls_are_read_at_startup() -> None:
    """Sentinel and Cluster URLs name their hosts, service and options; bad ones fail at once."""
    store = store_from_url("rediss+sentinel://:pw@h1,h2:26380/svc/2?durable=1&socket_timeout=1")
    assert isinstance(store, SentinelStore)
    assert store.topology.hosts == [("h1", 26379), ("h2", 26380)]
    assert (store.service, store.db, store.topology.password) == ("svc", 2, "pw")
    assert store.topology.credentials()["ssl"] is True
    assert store.durability == Durability(1, 0.5)
    cluster = store_from_url("redis+cluster://a:7000,[::1]:7001?wait_replicas=2&wait_timeout=2")
    assert isinstance(cluster, ClusterStore)
    assert cluster.topology.hosts == [("a", 7000), ("::1", 7001)]
    assert cluster.durability == Durability(2, 2.0)
    for bad in (
        "redis+sentinel://h1:26379",
        "redis+sentinel://h1:26379/svc/notadb",
        "redis+cluster://a:7000/0",
        "redis+cluster://a:port",
        "redis+cluster://a:7000?colour=red",
        "redis://h/0?wait_timeout=1",
        "redis://h/0?wait_replicas=0",
    ):
        with pytest.raises(ConfigurationError):
            store_from_url(bad)


async def test_cluster_keys_carry_their_hash_tag(redis_cluster: RedisCluster) -> None:
    """Each key and lock is stored in braces, a lock's fence counter is its slot's, and a
    fenced write across slots is refused."""
    async with await open_store(redis_cluster.url) as store:
        await store.set("k", 1)
        async with store.lock("{order:7}") as lease:
            await store.set_fenced("{order:7}:total", 5, lease)
            with pytest.raises(ValueError, match="hash tag"):
                await store.set_fenced("elsewhere", 5, lease)
        master = redis_cluster.master_of("qapp:k:{k}")
        with redis.Redis(port=master.port, decode_responses=True) as admin:
            assert admin.get("qapp:k:{k}") == "1"
        counter = fence_key(key_slot(b"qapp:l:{{order:7}}"))
        with redis.Redis(port=redis_cluster.master_of(counter).port) as admin:
            assert int(admin.get(counter) or 0) == lease.token
            assert admin.pttl(counter) == -1  # one per slot, for good
        assert await store.get("{order:7}:total") == 5
    redis_cluster.flushall()


def test_every_slot_has_a_fence_counter_of_its_own() -> None:
    """For each of the 16,384 slots, the fence counter's key hashes to that slot, so a lock
    and its counter are always one script's keys; no two slots share a counter."""
    keys = [fence_key(slot) for slot in range(SLOTS)]
    assert [key_slot(key.encode()) for key in keys] == list(range(SLOTS))
    assert all(key.count("{") == key.count("}") == 1 for key in keys)


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
async def test_durable_writes_wait_for_a_replica(
    topology: str, request: pytest.FixtureRequest
) -> None:
    """With wait_replicas=1 writes succeed while a replica confirms; asking for more replicas
    than exist is a StoreUnavailable, never a silent success."""
    url: str = request.getfixturevalue(f"{topology}_url")
    async with await open_store(url + "?wait_replicas=1&wait_timeout=1") as store:
        assert await store.incr("n") == 1
        await store.set("k", "v")
        assert await store.add("a", 1) is True
        async with store.lock("l") as lease:
            await lease.set("l", 1)
    async with await open_store(url + "?wait_replicas=5&wait_timeout=0.05") as store:
        with pytest.raises(StoreUnavailable, match="replica"):
            await store.incr("n")
        assert await store.get("n") == 2  # it ran on the master; only its answer was withheld


async def test_cluster_scan_and_clear_reach_every_master(redis_cluster: RedisCluster) -> None:
    """Keys that set_many spread over every master are all scanned, then all cleared."""
    keys = [f"k{n}" for n in range(300)]
    masters = {redis_cluster.master_of(f"qapp:k:{{{key}}}").port for key in keys}
    assert len(masters) == redis_cluster.masters
    async with await open_store(redis_cluster.url) as store:
        await store.set_many(dict.fromkeys(keys, 1))
        assert sorted({key async for key in store.scan("k", batch=10)}) == sorted(keys)
        assert await store.clear("k") == len(keys)
        assert await store.get_many(keys) == {}
    redis_cluster.flushall()


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
async def test_durable_many_keys_wait_for_a_replica(
    topology: str, request: pytest.FixtureRequest
) -> None:
    """With wait_replicas=1 set_many and clear succeed while a replica confirms; asking for more
    replicas than exist fails them with StoreUnavailable."""
    url: str = request.getfixturevalue(f"{topology}_url")
    async with await open_store(url + "?wait_replicas=1&wait_timeout=1") as store:
        await store.set_many({f"k{n}": n for n in range(50)}, ttl=60)
        assert await store.clear("k") == 50
    async with await open_store(url + "?wait_replicas=5&wait_timeout=0.05") as store:
        with pytest.raises(StoreUnavailable, match="replica"):
            await store.set_many({"a": 1, "b": 2})
        with pytest.raises(StoreUnavailable, match="replica"):
            await store.clear("")


async def test_holder_paused_past_its_lease_never_overwrites_on_cluster(cluster_url: str) -> None:
    """200 times on Cluster: a SIGSTOPped holder resumed after a newer holder wrote is refused."""
    accepted, survived = await paused_holder_rounds(cluster_url)
    assert (accepted, survived) == (0, ROUNDS)


async def test_unknown_sentinel_service_is_unavailable(redis_sentinel: RedisSentinel) -> None:
    """A service no sentinel watches is a StoreUnavailable at connect, not a hang."""
    hosts = redis_sentinel.url.split("//")[1].split("/")[0]
    with pytest.raises(StoreUnavailable):
        await open_store(f"redis+sentinel://{hosts}/nosuchservice")
