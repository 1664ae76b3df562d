"""Fixtures for the Sentinel and Cluster stores, for tests/conftest.py to take over.

A test module that wants them imports them (``from tests.topology_fixtures
import *``): each such module then starts its own topologies, once. Moved
into conftest.py (session scope), every module would share one of each.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.topologies import RedisCluster, RedisSentinel

__all__ = ["cluster_url", "redis_cluster", "redis_sentinel", "sentinel_url"]


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 masters and 3 replicas on free loopback ports."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def redis_sentinel() -> Iterator[RedisSentinel]:
    """A Redis master with 2 replicas and 3 sentinels on free loopback ports."""
    with RedisSentinel() as sentinel:
        yield sentinel


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> Iterator[str]:
    """The test's Redis Cluster URL; every master is emptied after each test."""
    yield redis_cluster.url
    redis_cluster.flushall()


@pytest.fixture
def sentinel_url(redis_sentinel: RedisSentinel) -> Iterator[str]:
    """The test's Redis Sentinel URL; the master is emptied after each test."""
    yield redis_sentinel.url
    redis_sentinel.flushall()
