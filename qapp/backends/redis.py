"""Redis store: state shared by every worker on every host.

``redis://host:port/db``, ``rediss://`` (TLS) and ``unix:///path?db=0`` are
accepted, with redis-py's query options (``socket_timeout``,
``max_connections``, …) overriding the defaults below. Redis Cluster and
Sentinel URLs are not wired up yet: redis-py's cluster client has a
different pool and lock API, and nothing here needs it.

Each worker keeps one connection pool, created in its own event loop on
first use. The pool waits for a free connection instead of failing when all
are busy, and a command that fails on a broken connection (Redis restarted)
is retried once on a fresh one, so a restart costs one retry rather than a
burst of 503s. Every other failure surfaces as the project's own error.

Increments of one key that overlap in one worker go out as one INCRBY of
their sum, and each caller gets its own number from the range it returns
(:mod:`qapp.coalesce`).

Keys are stored under ``qapp:k:`` and locks under ``qapp:l:``, so data and
locks never collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Any, NoReturn

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript

from qapp.backends.base import SharedStore
from qapp.state import (
    ConfigurationError,
    InvalidValue,
    JSONValue,
    StoreUnavailable,
    check_ttl,
    dumps,
    loads,
    redact,
)

#: Defaults for redis-py's pool and sockets; the URL's query may override them.
POOL_OPTIONS: dict[str, Any] = {
    "max_connections": 64,
    # Seconds to wait for a free pooled connection before giving up.
    "timeout": 5.0,
    "socket_connect_timeout": 2.0,
    "socket_timeout": 5.0,
    "health_check_interval": 30,
}

DATA_PREFIX = "qapp:k:"
LOCK_PREFIX = "qapp:l:"


def _script(name: str) -> str:
    return resources.files("qapp.backends").joinpath(name).read_text(encoding="utf-8")


INCR_LUA = _script("incr.lua")
UNLOCK_LUA = _script("unlock.lua")


def _ms(ttl: float) -> int:
    # Milliseconds, never rounded down to 0 (which Redis would reject).
    return max(1, math.ceil(ttl * 1000))


def _fail(exc: redis.exceptions.RedisError) -> NoReturn:
    if isinstance(exc, redis.exceptions.ResponseError) and (
        "not an integer" in str(exc) or "WRONGTYPE" in str(exc)
    ):
        raise InvalidValue(f"Redis: {exc}") from exc
    raise StoreUnavailable(f"Redis: {exc}") from exc


@dataclass
class _Client:
    """One worker's Redis client, with what is made alongside it in its event loop."""

    redis: aioredis.Redis
    #: As many as the pool has connections; see :meth:`RedisStore._command`.
    slots: asyncio.Semaphore
    incr: AsyncScript
    unlock: AsyncScript


class RedisStore(SharedStore):
    """A store in one Redis database, shared by every worker on every host."""

    scheme = "redis"
    scope = "cluster"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        try:
            # Parse now, so that a malformed URL fails at startup.
            parse_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL {redact(url)!r}: {exc}") from exc
        self._client: _Client | None = None

    def _connect(self) -> _Client:
        """The worker's client, created on first use inside its event loop."""
        if self._client is None:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                decode_responses=True,
                # Once, and only when the connection broke (Redis restarted):
                # a command that timed out may have run, and INCRBY or SET NX
                # must not run twice.
                retry=Retry(
                    ExponentialBackoff(cap=0.1, base=0.01),
                    retries=1,
                    supported_errors=(redis.exceptions.ConnectionError,),
                ),
                **POOL_OPTIONS,
            )
            client = aioredis.Redis.from_pool(pool)
            self._client = _Client(
                redis=client,
                slots=asyncio.Semaphore(pool.max_connections),
                incr=client.register_script(INCR_LUA),
                unlock=client.register_script(UNLOCK_LUA),
            )
        return self._client

    @property
    def client(self) -> aioredis.Redis:
        """The worker's redis-py client, created on first use inside its event loop."""
        return self._connect().redis

    @contextlib.asynccontextmanager
    async def _command(self) -> AsyncIterator[_Client]:
        """Run commands on the client, one pool connection's worth, failing as our own error.

        redis-py's blocking pool wakes waiters unfairly: a task that has just
        released a connection can take it straight back, and under a few
        hundred concurrent requests some waiters starve past the pool's
        timeout. asyncio's semaphore queues them first come, first served, and
        holds exactly as many tasks as the pool has connections, so the pool
        itself never has to make anyone wait.
        """
        client = self._connect()
        try:
            async with asyncio.timeout(POOL_OPTIONS["timeout"]):
                await client.slots.acquire()
        except TimeoutError:
            raise StoreUnavailable("Redis: no connection free in time") from None
        try:
            yield client
        except redis.exceptions.RedisError as exc:
            _fail(exc)
        finally:
            client.slots.release()

    async def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.redis.aclose()

    async def ping(self) -> None:
        async with self._command() as client:
            await client.redis.ping()

    async def get(self, key: str) -> JSONValue:
        async with self._command() as client:
            raw = await client.redis.get(DATA_PREFIX + key)
        return None if raw is None else loads(raw)

    async def set(self, key: str, value: JSONValue, ttl: float | None = None) -> None:
        raw, ttl = dumps(value), check_ttl(ttl)
        async with self._command() as client:
            await client.redis.set(DATA_PREFIX + key, raw, px=None if ttl is None else _ms(ttl))

    async def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        raw, ttl = dumps(value), check_ttl(ttl)
        async with self._command() as client:
            px = None if ttl is None else _ms(ttl)
            return bool(await client.redis.set(DATA_PREFIX + key, raw, nx=True, px=px))

    async def delete(self, key: str) -> bool:
        async with self._command() as client:
            return bool(await client.redis.delete(DATA_PREFIX + key))

    async def expire(self, key: str, ttl: float | None) -> bool:
        ttl = check_ttl(ttl)
        async with self._command() as client:
            if ttl is not None:
                return bool(await client.redis.pexpire(DATA_PREFIX + key, _ms(ttl)))
            # PERSIST answers 0 for a key without a ttl; ask EXISTS instead.
            async with client.redis.pipeline(transaction=True) as pipe:
                pipe.persist(DATA_PREFIX + key)
                pipe.exists(DATA_PREFIX + key)
                _, exists = await pipe.execute()
            return bool(exists)

    async def incr_by(self, key: str, delta: int, ttl: float | None) -> int:
        async with self._command() as client:
            if ttl is None:
                # Plain INCRBY: one round trip, no script.
                return int(await client.redis.incrby(DATA_PREFIX + key, delta))
            args = [delta, _ms(ttl)]
            return int(await client.incr(keys=[DATA_PREFIX + key], args=args, client=client.redis))

    async def try_acquire(self, name: str, token: str, lease: float) -> bool:
        async with self._command() as client:
            return bool(await client.redis.set(LOCK_PREFIX + name, token, nx=True, px=_ms(lease)))

    async def release(self, name: str, token: str) -> None:
        async with self._command() as client:
            await client.unlock(keys=[LOCK_PREFIX + name], args=[token], client=client.redis)
