"""The cost curve's load: its data, its operations, its fill, and how big a store is.

Sessions are a small JSON object under ``session:<id>`` (as
:mod:`qapp.ext.sessions` keeps them, ids like ``secrets.token_urlsafe(32)``
but derived from a number, so that a random existing one can be read
without keeping a million in memory); cache values a few hundred bytes
under ``cache:``; counters a fixed hot set of 1,000 under ``counter:``, so
that only the table around them grows. Everything goes through the store
API; only the size is read from outside it (:class:`Probe`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import asyncpg
import redis.asyncio as aioredis

from qapp.state import JSONValue, Store

StoreName: TypeAlias = Literal["sqlite", "redis", "postgresql"]
#: Every store the cost curve knows, in the order it runs them.
STORES: tuple[StoreName, ...] = ("sqlite", "redis", "postgresql")
#: The operations measured at each size, in order.
OPS = ("session get", "cache get", "incr")
#: Counters ``incr`` picks from: a fixed hot set, so that only the table grows.
COUNTERS = 1_000
#: Rows per ``set_many`` call while filling.
BATCH = 1_000
#: What a session and a cache value live for while filling: longer than any run.
SESSION_TTL = 14 * 24 * 3600.0
CACHE_TTL = 24 * 3600.0


@dataclass(frozen=True)
class ScaleSettings:
    """What to run, from the command line."""

    sizes: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    stores: tuple[StoreName, ...] = STORES
    #: Operations of each kind measured at each size, and how many run at once.
    ops: int = 2_000
    concurrency: int = 32
    #: Expired sessions written at the largest size, as a share of it; 0 skips the sweep.
    expired_share: float = 0.5
    #: The longest the sweep phase measures, in seconds.
    sweep_cap: float = 60.0
    seed: int = 1


@dataclass
class OpStats:
    """One operation's latencies in one phase."""

    count: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    ops_per_s: float | None


@dataclass
class Step:
    """One size of one store: its fill and its operations."""

    size: int
    #: Seconds to grow the store from the size before to this one, and rows written per second.
    fill_seconds: float
    rows_per_s: float
    #: What the store grew by per new session and per new cache value.
    bytes_per_session: float
    bytes_per_cache_value: float
    ops: dict[str, OpStats] = field(default_factory=dict)


# --- the data ----------------------------------------------------------------


def session_id(i: int, kind: bytes = b"live") -> str:
    """The ``i``-th session's id: 43 URL-safe characters, as ``secrets.token_urlsafe(32)`` gives.

    Derived from ``i``, so that a random existing session can be read
    without keeping a million ids in memory.
    """
    digest = hashlib.blake2b(i.to_bytes(8, "big"), digest_size=32, key=kind).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def session_value(i: int) -> JSONValue:
    """A session as a logged-in user's looks: a user id and a few fields (about 150 bytes)."""
    return {
        "user_id": i,
        "name": f"user{i}",
        "role": "member",
        "csrf": session_id(i, b"csrf")[:32],
        "login_at": 1_780_000_000 + i,
    }


def cache_value(i: int) -> JSONValue:
    """A cached computation's result: a few hundred bytes of JSON."""
    return {"id": i, "title": f"product {i}", "price": i % 997, "body": "lorem ipsum " * 25}


def latencies(samples: list[float], seconds: float) -> OpStats:
    if not samples:
        return OpStats(0, None, None, None, None)
    ms = sorted(s * 1000 for s in samples)
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return OpStats(
        count=len(ms),
        p50_ms=round(cuts[49], 3),
        p99_ms=round(cuts[98], 3),
        max_ms=round(ms[-1], 3),
        ops_per_s=round(len(ms) / seconds, 1) if seconds > 0 else None,
    )


# --- what the store takes up -------------------------------------------------


class Probe:
    """How big a store is, read from outside the store API."""

    async def size(self) -> int:
        """Bytes the store takes up now."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the probe holds."""


class SQLiteProbe(Probe):
    """The database file's size, its write-ahead log checkpointed into it first."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _checkpointed_size(self) -> int:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            # A checkpoint that another connection holds up (the store's own
            # sweep checkpoints too) answers busy and copies only part of the
            # log: then the file's size is not yet the data's. Try again.
            for _ in range(200):
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    break
                time.sleep(0.01)
        finally:
            conn.close()
        return self.path.stat().st_size

    async def size(self) -> int:
        return await asyncio.to_thread(self._checkpointed_size)


class PostgresProbe(Probe):
    """``pg_total_relation_size`` of the store's table: its heap, TOAST and indexes."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def size(self) -> int:
        conn = await asyncpg.connect(self.url)
        try:
            return int(await conn.fetchval("SELECT pg_total_relation_size('qapp_kv')"))
        finally:
            await conn.close()


class RedisProbe(Probe):
    """``INFO memory``'s ``used_memory``; also ``DBSIZE``, to watch expiry."""

    def __init__(self, url: str) -> None:
        self.client: Any = aioredis.Redis.from_url(url)

    async def size(self) -> int:
        info = await self.client.info("memory")
        return int(info["used_memory"])

    async def keys(self) -> int:
        """Keys in the database, expired ones not yet deleted included."""
        return int(await self.client.dbsize())

    async def close(self) -> None:
        await self.client.aclose()


# --- load --------------------------------------------------------------------

Op: TypeAlias = Callable[[random.Random], Awaitable[object]]


def operations(store: Store, size: Callable[[], int]) -> dict[str, Op]:
    """The measured operations, each on a random key of the store as it is now."""
    sessions, cache, counters = (store.namespace(n) for n in ("session", "cache", "counter"))

    async def session_get(rng: random.Random) -> object:
        return await sessions.get(session_id(rng.randrange(size())))

    async def cache_get(rng: random.Random) -> object:
        return await cache.get(f"product:{rng.randrange(size())}")

    async def incr(rng: random.Random) -> object:
        return await counters.incr(f"hits:{rng.randrange(COUNTERS)}")

    return {"session get": session_get, "cache get": cache_get, "incr": incr}


async def drive(
    ops: dict[str, Op],
    count: int,
    concurrency: int,
    rng: random.Random,
    *,
    go_on: Callable[[], bool] = lambda: True,
) -> tuple[dict[str, list[float]], float]:
    """Run ``count`` operations, the kinds of ``ops`` in turn, ``concurrency`` at a time.

    Each worker starts its next operation only while ``go_on()`` holds.
    Returns each kind's latencies in seconds, and the seconds it all took.
    """
    kinds = list(ops)
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < count and go_on():
            kind = kinds[issued % len(kinds)]
            issued += 1
            began = time.perf_counter()
            await ops[kind](rng)
            samples[kind].append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - began


async def measure_each(
    ops: dict[str, Op], settings: ScaleSettings, rng: random.Random
) -> dict[str, OpStats]:
    """Each operation on its own: a short warm-up, then ``settings.ops`` of it measured."""
    stats = {}
    for kind, op in ops.items():
        one = {kind: op}
        await drive(one, max(settings.concurrency, settings.ops // 10), settings.concurrency, rng)
        samples, seconds = await drive(one, settings.ops, settings.concurrency, rng)
        stats[kind] = latencies(samples[kind], seconds)
    return stats


def stats_of(samples: dict[str, list[float]], seconds: float) -> dict[str, OpStats]:
    return {kind: latencies(values, seconds) for kind, values in samples.items()}


# --- filling -----------------------------------------------------------------


async def fill_sessions(
    store: Store, start: int, stop: int, *, kind: bytes = b"live", ttl: Callable[[], float]
) -> None:
    """Write sessions ``start`` to ``stop`` with ``set_many``, a batch at a time."""
    sessions = store.namespace("session")
    for low in range(start, stop, BATCH):
        high = min(stop, low + BATCH)
        batch = {session_id(i, kind): session_value(i) for i in range(low, high)}
        await sessions.set_many(batch, ttl=ttl())


async def fill_cache(store: Store, start: int, stop: int) -> None:
    """Write cache values ``start`` to ``stop`` with ``set_many``, a batch at a time."""
    cache = store.namespace("cache")
    for low in range(start, stop, BATCH):
        high = min(stop, low + BATCH)
        batch = {f"product:{i}": cache_value(i) for i in range(low, high)}
        await cache.set_many(batch, ttl=CACHE_TTL)


async def grow(store: Store, probe: Probe, start: int, stop: int) -> Step:
    """Grow the store from ``start`` sessions and cache values to ``stop`` of each."""
    if start == 0:
        await store.namespace("counter").set_many({f"hits:{j}": 0 for j in range(COUNTERS)})
    before = await probe.size()
    filling = time.perf_counter()
    await fill_sessions(store, start, stop, ttl=lambda: SESSION_TTL)
    seconds = time.perf_counter() - filling
    middle = await probe.size()
    filling = time.perf_counter()
    await fill_cache(store, start, stop)
    seconds += time.perf_counter() - filling
    after = await probe.size()
    new = stop - start
    return Step(
        size=stop,
        fill_seconds=round(seconds, 2),
        rows_per_s=round(2 * new / seconds, 1) if seconds > 0 else 0.0,
        bytes_per_session=round((middle - before) / new, 1),
        bytes_per_cache_value=round((after - middle) / new, 1),
    )
