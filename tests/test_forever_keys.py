"""Nothing qapp writes lives for ever unless a user asked for it.

An abuse burst (many distinct lab stampede keys, memo keys, cache writes,
logins, new sessions, ``cached`` calls and locks over many distinct names)
is run against the app on every backend, and against ``qapp serve`` with 2
workers on SQLite and on Redis; then every key or row of the store is read
straight from the backend, and each must expire, or belong to the fixed set
that is permanent on purpose (:data:`FIXED`): the store's fence counter, the
race lab's three shared counters, and the accounts a user registered.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from quart import Quart

from qapp import create_app
from qapp.ext import cached, state_of
from qapp.state import Store, open_store
from qapp.store.backends.memory import MemoryStore
from qapp.store.backends.postgres_sql import FENCE_SHARDS
from qapp.testing import HypercornServer
from tests.conftest import NO_LIMITS, NO_LIMITS_ENV

#: Distinct keys per kind in the in-process burst.
KEYS = 120
#: Distinct keys per kind in the burst against a real server.
SERVED_KEYS = 300
#: The account the burst registers: the one permanent entry a user asked for.
USER = "forever_user"
PASSWORD = "correct horse battery"
#: The race lab's shared counters: one key per strategy, a fixed set.
RACE_COUNTERS = ("shared-unsafe", "shared-locked", "atomic")

#: What may stay without an expiry, whatever the burst did: the store's fence
#: counter (a fixed number of rows on PostgreSQL), the race lab's counters and the
#: registered account, as each backend names them.
FIXED = {
    "redis": {"qapp:fence", f"qapp:k:user:{USER}"}
    | {f"qapp:k:counter:{name}" for name in RACE_COUNTERS},
    "sqlite": {"qapp_fence:1", f"qapp_kv:user:{USER}"}
    | {f"qapp_kv:counter:{name}" for name in RACE_COUNTERS},
}
FIXED["postgresql"] = (FIXED["sqlite"] - {"qapp_fence:1"}) | {
    f"qapp_fence:{shard}" for shard in range(FENCE_SHARDS)
}
FIXED["memory"] = {f"user:{USER}"} | {f"counter:{name}" for name in RACE_COUNTERS}

#: Work and limits of the apps under test: no simulated work, so the burst is
#: quick, and no quotas, so that every request of the burst creates what it can.
FAST = {"LAB_WORK": 0, "MEMO_WORK": 0, "LAB_REFRESH_WORK": 0}


# --- every entry of a store without an expiry --------------------------------------


async def lasting(url: str, store: Store | None = None) -> set[str]:
    """Every key or row of the store at ``url`` that will never expire or be reclaimed.

    A row whose expiry has passed but that the sweep of expired rows leaves
    (a released lock's row, once) counts as lasting too. For ``memory://`` the store object is
    read: its entries without expiry, and any other bookkeeping it still holds
    per name (named ``<attribute>:<name>``).
    """
    if url.startswith("memory"):
        assert isinstance(store, MemoryStore)
        return _memory_lasting(store)
    if not url.startswith("redis"):
        # The first write of a new store sweeps expired rows (closing waits for
        # it): what is still there afterwards is never reclaimed.
        async with await open_store(url) as fresh:
            await fresh.set("forever-test:sweep", 1, ttl=60)
    if url.startswith("sqlite"):
        return _sqlite_lasting(Path(url.removeprefix("sqlite://")))
    if url.startswith("redis"):
        return await _redis_lasting(url)
    return await _postgres_lasting(url)


def _memory_lasting(store: MemoryStore) -> set[str]:
    found = {
        key
        for bucket in store.buckets.values()
        for key, (_, expires) in bucket.items()
        if expires is None
    }
    for attribute, held in vars(store).items():
        if attribute != "buckets" and isinstance(held, dict | set):
            found |= {f"{attribute}:{name}" for name in held}
    return found


def _sqlite_lasting(path: Path) -> set[str]:
    found = set()
    with sqlite3.connect(path) as conn:
        schema = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
        for table in [row[0] for row in schema]:
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            if "expires_at" in columns:
                rows = conn.execute(
                    f"SELECT {columns[0]} FROM {table} WHERE expires_at IS NULL OR expires_at <= ?",
                    (time.time(),),
                )
            else:
                rows = conn.execute(f"SELECT {columns[0]} FROM {table}")
            found |= {f"{table}:{row[0]}" for row in rows}
    conn.close()
    return found


async def _redis_lasting(url: str) -> set[str]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        keys = [key async for key in client.scan_iter(count=1000)]
        ttls = [await client.pttl(key) for key in keys]
    finally:
        await client.aclose()
    return {key for key, ttl in zip(keys, ttls, strict=True) if ttl == -1}


async def _postgres_lasting(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    found = set()
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        for (table,) in tables:
            columns = [
                row[0]
                for row in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = $1 AND table_schema = current_schema()"
                    " ORDER BY ordinal_position",
                    table,
                )
            ]
            where = ""
            if "expires_at" in columns:
                where = " WHERE expires_at IS NULL OR expires_at <= statement_timestamp()"
            for (name,) in await conn.fetch(f"SELECT {columns[0]} FROM {table}{where}"):
                text = bytes(name).decode() if isinstance(name, bytes) else str(name)
                found.add(f"{table}:{text}")
    finally:
        await conn.close()
    return found


def kinds(entries: set[str]) -> dict[str, int]:
    """How many of ``entries`` there are of each kind (their first two ``:`` parts)."""
    counts: dict[str, int] = {}
    for entry in entries:
        kind = ":".join(entry.split(":")[:2])
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def backend_of(url: str) -> str:
    """The name :data:`FIXED` knows the backend of ``url`` by."""
    return "redis" if url.startswith("redis") else url.split(":", 1)[0]


# --- the burst ---------------------------------------------------------------------------


async def in_batches(jobs: list[Callable[[], Awaitable[None]]], size: int = 50) -> None:
    """Run ``jobs`` ``size`` at a time."""
    for start in range(0, len(jobs), size):
        await asyncio.gather(*(job() for job in jobs[start : start + size]))


def expect(
    client: httpx.AsyncClient, method: str, path: str, status: int = 200, **kwargs: Any
) -> Callable[[], Awaitable[None]]:
    """A request that must be answered ``status``."""

    async def send() -> None:
        response = await client.request(method, path, **kwargs)
        assert response.status_code == status, (path, response.text)

    return send


async def http_burst(client: httpx.AsyncClient, keys: int) -> None:
    """What an anonymous client (or a hostile page, through visitors' browsers) can make."""
    jobs = []
    for n in range(keys):
        jobs += [
            expect(client, "GET", f"/lab/stampede/cached/x{n}"),
            expect(client, "GET", f"/lab/stampede/naive/y{n}"),
            expect(client, "GET", f"/lab/stampede/cached/x{n}/computations"),
            expect(client, "GET", f"/memo/m{n}"),
            expect(client, "PUT", f"/cache/c{n}", 204, json={"n": n}),
        ]
    jobs += [expect(client, "GET", f"/lab/refresh/{mode}") for mode in ("expire", "stale", "early")]
    jobs += [expect(client, "POST", f"/counter/{name}") for name in RACE_COUNTERS]
    await in_batches(jobs)
    # New sessions, each with values: one client each (no cookie sent back).
    for _ in range(keys // 4):
        client.cookies.clear()
        await expect(client, "POST", "/session/counter/inc")()
        await expect(client, "POST", "/lab/session/atomic")()
    # An account (the user asked for this one), its logins, and failed logins.
    account = {"username": USER, "password": PASSWORD}
    await expect(client, "POST", "/auth/register", 201, json=account)()
    for _ in range(3):
        client.cookies.clear()
        await expect(client, "POST", "/auth/login", json=account)()
        await expect(client, "POST", "/session/counter/inc")()
    await expect(client, "POST", "/auth/logout", 204)()
    for n in range(3):
        wrong = {"username": f"nobody_{n}", "password": PASSWORD}
        await expect(client, "POST", "/auth/login", 401, json=wrong)()


async def library_burst(app: Quart, keys: int) -> None:
    """``cached`` over many distinct arguments, and locks over many distinct names."""
    async with app.app_context():

        @cached(ttl=60)
        async def square(n: int) -> int:
            return n * n

        for n in range(keys):
            assert await square(n) == n * n
        store = state_of(app).store()
        for n in range(keys):
            async with store.lock(f"job:{n}", timeout=5) as lease:
                await lease.set(f"job:{n}", n, ttl=60)
            async with store.namespace("jobs").lease(f"{n}", timeout=5, wait=1):
                pass


# --- in process, on every backend ---------------------------------------------------


@pytest.fixture
def app(store_url: str, tmp_path: Path) -> Quart:
    """The app on each backend, without simulated work or quotas."""
    settings = {"STORE_URL": store_url, "INSTANCE_PATH": str(tmp_path / "instance")}
    return create_app({**settings, **FAST, **NO_LIMITS})


async def test_abuse_burst_leaves_nothing_for_ever(
    app: Quart, client: httpx.AsyncClient, store_url: str
) -> None:
    """After an abuse burst every stored entry expires, but for the fixed permanent set."""
    await http_burst(client, KEYS)
    await library_burst(app, KEYS)
    left = await lasting(store_url, state_of(app).store()) - FIXED[backend_of(store_url)]
    assert not left, f"{len(left)} entries that never expire: {kinds(left)}"


# --- against qapp serve, 2 workers ------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``qapp serve`` with 2 workers on SQLite or Redis: its URL and its store's."""
    if request.param == "redis":
        store_url: str = request.getfixturevalue("redis_url")
    else:
        store_url = f"sqlite://{tmp_path / 'qapp.db'}"
    env = {
        "QAPP_STORE_URL": store_url,
        "QAPP_INSTANCE_PATH": str(tmp_path),
        **{f"QAPP_{key}": str(value) for key, value in FAST.items()},
        **NO_LIMITS_ENV,
    }
    with HypercornServer(workers=2, env=env) as server:
        yield server.url, store_url


@pytest.fixture
async def served_client(served: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the served app."""
    async with httpx.AsyncClient(base_url=served[0], timeout=60) as client:
        yield client


@pytest.mark.slow
async def test_abuse_burst_against_two_workers_leaves_nothing_for_ever(
    served: tuple[str, str], served_client: httpx.AsyncClient
) -> None:
    """The same burst against ``qapp serve`` with 2 workers leaves only the fixed permanent set."""
    await http_burst(served_client, SERVED_KEYS)
    _, store_url = served
    left = await lasting(store_url) - FIXED[backend_of(store_url)]
    assert not left, f"{len(left)} entries that never expire: {kinds(left)}"
