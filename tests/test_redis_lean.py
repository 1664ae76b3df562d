"""Single Redis commands on connections of their own: the same answers and failures as redis-py's.

Against a real redis-server of the test session. The store's short command
path (:mod:`qapp.store.backends.redis_lean`) must keep every guarantee of
the client it bypasses: a time limit that closes the connection, one retry
on a fresh connection after the server dropped it, error replies that leave
the connection usable, and nothing left open after close. A session read
with a cookie is one command.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis as sync_redis
from quart import Quart

from qapp import create_app
from qapp.state import InvalidValue, StoreUnavailable, store_from_url
from qapp.store.backends.redis import RedisStore
from qapp.store.backends.redis_cluster import ClusterStore
from qapp.store.backends.redis_sentinel import SentinelStore


def _clients(url: str) -> int:
    """Connections the server has open now, this probe's own excluded."""
    with sync_redis.Redis.from_url(url) as probe:
        return int(probe.info("clients")["connected_clients"]) - 1


def _calls(url: str) -> dict[str, int]:
    """Commands the server ran since the last reset, by name (the probe's own left out)."""
    with sync_redis.Redis.from_url(url) as probe:
        stats = probe.info("commandstats")
    counts = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
    # The probe's own: its handshake and its question.
    for own in ("hello", "info", "config|resetstat"):
        counts.pop(own, None)
    return counts


def _reset_calls(url: str) -> None:
    with sync_redis.Redis.from_url(url) as probe:
        probe.config_resetstat()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    opened = store_from_url(redis_url)
    assert isinstance(opened, RedisStore)
    async with opened:
        yield opened


def test_only_plain_redis_takes_the_short_path() -> None:
    """Sentinel and Cluster keep redis-py's client, which finds the server to talk to."""
    assert RedisStore.lean_commands is True
    assert SentinelStore.lean_commands is False
    assert ClusterStore.lean_commands is False


async def test_answers_match_the_client(store: RedisStore, redis_url: str) -> None:
    """Reads, writes, increments, scripts and batches answer as through redis-py's client."""
    await store.set("a", {"x": [1, "two", None]})
    assert await store.get("a") == {"x": [1, "two", None]}
    assert await store.get("missing") is None
    assert await store.add("a", 1) is False
    assert await store.incr("n", 5) == 5
    assert await store.incr("n", 2) == 7
    assert await store.incr("m", 2, ttl=30) == 2  # a script (EVALSHA, then EVAL)
    ttl = await store.ttl("m")
    assert ttl is not None
    assert 0 < ttl <= 30
    assert await store.get_many(["a", "n", "missing"]) == {"a": {"x": [1, "two", None]}, "n": 7}
    assert await store.expire("a", 10) is True
    assert await store.delete("a") is True
    await store.ping()
    with sync_redis.Redis.from_url(redis_url, decode_responses=True) as probe:
        assert json.loads(probe.get("qapp:k:n") or "null") == 7


async def test_error_reply_keeps_the_connection(store: RedisStore, redis_url: str) -> None:
    """An increment of a non-number is InvalidValue, and the next call needs no new connection."""
    await store.set("text", "hello")
    before = _clients(redis_url)
    with pytest.raises(InvalidValue):
        await store.incr("text")
    assert await store.get("text") == "hello"
    assert _clients(redis_url) == before


async def test_dropped_connections_are_retried_once(store: RedisStore, redis_url: str) -> None:
    """After the server closes every client connection, the next call succeeds on a fresh one."""
    await asyncio.gather(*(store.set(f"k{i}", i) for i in range(8)))
    with sync_redis.Redis.from_url(redis_url) as probe:
        killed = probe.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    assert await store.get("k3") == 3
    assert await asyncio.gather(*(store.get(f"k{i}") for i in range(8))) == list(range(8))


async def test_time_limit_is_a_503_and_the_store_recovers(redis_url: str) -> None:
    """A reply later than socket_timeout is StoreUnavailable; its connection is closed."""
    async with store_from_url(f"{redis_url}?socket_timeout=0.2") as store:
        await store.set("k", 1)
        opened = _clients(redis_url)
        with sync_redis.Redis.from_url(redis_url) as probe:
            probe.execute_command("CLIENT", "PAUSE", 600, "ALL")
        with pytest.raises(StoreUnavailable):
            await store.get("k")
        await asyncio.sleep(0.6)  # the pause ends
        assert await store.get("k") == 1
        # The late connection was closed: a new one took its place, no more.
        assert _clients(redis_url) == opened


async def test_close_leaves_nothing_open(redis_url: str) -> None:
    """Closing the store closes the short path's connections too."""
    before = _clients(redis_url)
    store = store_from_url(redis_url)
    await store.connect()
    await asyncio.gather(*(store.get(f"k{i}") for i in range(10)))
    assert _clients(redis_url) > before
    await store.close()
    for _ in range(50):
        if _clients(redis_url) == before:
            break
        await asyncio.sleep(0.02)
    assert _clients(redis_url) == before


@pytest.fixture
def redis_app(redis_url: str, tmp_path: Path) -> Quart:
    return create_app({"STORE_URL": redis_url, "INSTANCE_PATH": str(tmp_path / "instance")})


async def test_session_read_is_one_command(redis_app: Quart, redis_url: str) -> None:
    """GET /session/counter with a cookie reads the session and its counter in one MGET."""
    async with redis_app.test_app():
        client = redis_app.test_client()
        first = await client.post("/session/counter/inc")
        assert first.headers.get("set-cookie", "").startswith("session=")
        # The first read renews the new session's ttl (and opens connections).
        await client.get("/session/counter")
        _reset_calls(redis_url)
        answer = await client.get("/session/counter")
        assert answer.status_code == 200
        assert await answer.get_json() == {"counter": 1}
        assert _calls(redis_url) == {"mget": 1}


async def test_session_value_follows_this_requests_own_changes(
    redis_app: Quart, redis_url: str
) -> None:
    """A value read after an increment or a set in the same request is what that change left."""
    from qapp.ext import session

    @redis_app.post("/probe")
    async def probe() -> dict[str, object]:
        seen = [await session.value("counter")]
        seen.append(await session.incr("counter", 5))
        seen.append(await session.value("counter"))
        await session.set_value("counter", 40)
        seen.append(await session.value("counter"))
        return {"seen": seen}

    async with redis_app.test_app():
        client = redis_app.test_client()
        await client.post("/session/counter/inc")
        answer = await client.post("/probe")
        assert await answer.get_json() == {"seen": [1, 6, 6, 40]}
        again = await client.get("/session/counter")
        assert await again.get_json() == {"counter": 40}


async def test_logged_in_read_reads_the_login_generation_with_the_session(
    redis_app: Quart, redis_url: str
) -> None:
    """GET /auth/me reads the session, its values and the user's login generation in one
    MGET, then the user (tests/test_auth_features.py holds logging out everywhere to it)."""
    creds = {"username": "grace", "password": "a long enough password"}
    async with redis_app.test_app():
        client = redis_app.test_client()
        assert (await client.post("/auth/register", json=creds)).status_code == 201
        assert (await client.post("/auth/login", json=creds)).status_code == 200
        # The first read renews the new session's ttl and notes whose it is.
        assert (await client.get("/auth/me")).status_code == 200
        _reset_calls(redis_url)
        answer = await client.get("/auth/me")
        assert await answer.get_json() == {"username": "grace"}
        assert _calls(redis_url) == {"mget": 1, "get": 1}
