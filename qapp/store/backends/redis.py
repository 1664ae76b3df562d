"""Redis store: state shared by every worker on every host.

``redis://host:port/db``, ``rediss://`` (TLS) and ``unix:///path?db=0`` are
accepted, with redis-py's query options (``socket_timeout``,
``max_connections``, …) overriding the defaults below. Redis Sentinel and
Redis Cluster are :mod:`~qapp.store.backends.redis_sentinel` and
:mod:`~qapp.store.backends.redis_cluster`, subclasses of :class:`RedisStore` that
change how the client is made and how keys are named, nothing else. With
``?wait_replicas=1`` (or ``?durable=1``) every write is acknowledged only
once a replica holds it (:mod:`~qapp.store.backends.redis_urls`).

Each worker keeps one connection pool, created in its own event loop on
first use. The pool waits for a free connection instead of failing when all
are busy, and a command that fails on a broken connection (Redis restarted)
is retried once on a fresh one, so a restart costs one retry rather than a
burst of 503s. Every other failure surfaces as the project's own error.

Increments of one key that overlap in one worker go out as one INCRBY of
their sum, and each caller gets its own number from the range it returns
(:mod:`qapp.coalesce`).

Keys are stored under ``qapp:k:`` and locks under ``qapp:l:``, so data and
locks never collide. Fencing tokens come from one counter, ``qapp:fence``
(on Cluster one per hash slot): a lock's key goes when it is released or its
lease runs out, and nothing is kept per lock name.

Commands are sent raw (``SET k v NX PX ms``), each through :meth:`_write`
when it changes data, so that durable mode can follow it with ``WAIT`` on
the same connection. Lua scripts go by digest (``EVALSHA``), and by text
(``EVAL``) to a server that has not seen them yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any, NoReturn

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from qapp.store.backends.base import SharedStore, TokenLease
from qapp.store.backends.redis_keys import RedisKeys
from qapp.store.backends.redis_lean import LeanCommands
from qapp.store.backends.redis_urls import Durability, check_client_url, split_durability
from qapp.store.backends.redis_wakeups import Wakeups
from qapp.store.errors import InvalidValue, StaleLease, StoreUnavailable
from qapp.store.lease import Lease, Wakeup
from qapp.store.values import JSONValue, check_ttl, dumps, loads

#: Defaults for redis-py's pool and sockets; the URL's query may override them.
POOL_OPTIONS: dict[str, Any] = {
    "max_connections": 64,
    # Seconds to wait for a free pooled connection before giving up.
    "timeout": 5.0,
    "socket_connect_timeout": 2.0,
    "socket_timeout": 5.0,
    "health_check_interval": 30,
}
#: The options of :data:`POOL_OPTIONS` that are each connection's, not the pool's.
CONNECTION_OPTIONS = ("socket_connect_timeout", "socket_timeout", "health_check_interval")

DATA_PREFIX = "qapp:k:"
LOCK_PREFIX = "qapp:l:"
#: The counter that issues fencing tokens: the last token, for any lock name.
FENCE_KEY = "qapp:fence"
#: Channels of notify/listen, followed by the database number and a colon:
#: pub/sub is shared by every database of a server.
WAKEUP_PREFIX = "qapp:w:"


@dataclass(frozen=True)
class Script:
    """A Lua script of this package: its text, and the digest Redis caches it under."""

    text: str
    sha: str

    @classmethod
    def load(cls, name: str) -> Script:
        text = resources.files("qapp.store.backends").joinpath(name).read_text(encoding="utf-8")
        return cls(text, hashlib.sha1(text.encode()).hexdigest())


INCR = Script.load("incr.lua")
UNLOCK = Script.load("unlock.lua")
EXTEND = Script.load("extend.lua")
ACQUIRE = Script.load("acquire.lua")
SET_FENCED = Script.load("fenced_set.lua")
PERSIST = Script.load("persist.lua")


def _ms(ttl: float) -> int:
    # Milliseconds, never rounded down to 0 (which Redis would reject).
    return max(1, math.ceil(ttl * 1000))


def _px(ttl: float | None) -> list[str | int]:
    return [] if ttl is None else ["PX", _ms(ttl)]


#: What the driver raises for a store that cannot serve: redis-py's errors, and
#: the cluster client's own (no layout learnt, slots not covered).
FAILURES = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)


def _fail(exc: Exception) -> NoReturn:
    if isinstance(exc, redis.exceptions.ResponseError) and (
        "not an integer" in str(exc) or "WRONGTYPE" in str(exc)
    ):
        raise InvalidValue(f"Redis: {exc}") from exc
    raise StoreUnavailable(f"Redis: {exc}") from exc


@dataclass
class _Client:
    """One worker's Redis client, with what is made alongside it in its event loop."""

    #: A Redis, or a RedisCluster: the commands sent here are the same on both.
    redis: Any
    #: As many as the pool has connections; see :meth:`RedisStore._command`.
    slots: asyncio.Semaphore
    #: Durable writes in flight at once: half the slots, so that writes blocked
    #: in WAIT (a replica down) never take every connection from the reads.
    waiters: asyncio.Semaphore
    #: Where single commands go past redis-py's client (plain Redis), else None.
    lean: LeanCommands | None


class _Held:
    """The slots one store call holds while it runs its commands; see RedisStore._command.

    A class rather than a generator-based context manager: it is entered by
    every store call, and this costs a fraction of ``asynccontextmanager``.
    """

    __slots__ = ("client", "gates", "taken")

    def __init__(self, client: _Client, gates: tuple[asyncio.Semaphore, ...]) -> None:
        self.client = client
        self.gates = gates
        self.taken: list[asyncio.Semaphore] = []

    async def __aenter__(self) -> _Client:
        try:
            for gate in self.gates:
                if gate.locked():
                    # Only a wait needs the time limit (and its cost).
                    async with asyncio.timeout(POOL_OPTIONS["timeout"]):
                        await gate.acquire()
                else:
                    await gate.acquire()
                self.taken.append(gate)
        except TimeoutError:
            self._release()
            raise StoreUnavailable("Redis: no connection free in time") from None
        except BaseException:
            self._release()
            raise
        return self.client

    async def __aexit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        self._release()
        if isinstance(exc, FAILURES):
            _fail(exc)

    def _release(self) -> None:
        while self.taken:
            self.taken.pop().release()


class RedisStore(RedisKeys, SharedStore):
    """A store in one Redis database, shared by every worker on every host."""

    scheme = "redis"
    scope = "cluster"
    #: Single commands skip redis-py's client (:mod:`~qapp.store.backends.redis_lean`);
    #: Sentinel and Cluster, whose client finds the server, keep it.
    lean_commands = True

    def __init__(self, url: str) -> None:
        super().__init__(url)
        #: The URL without qapp's own options, as redis-py reads it.
        self.client_url, self.durability = split_durability(url)
        # Parse now, so that a malformed URL fails at startup.
        self._check_url()
        self._client: _Client | None = None

    def _check_url(self) -> None:
        """Raise ConfigurationError unless :attr:`client_url` names a server and database."""
        check_client_url(self.url, self.client_url)

    def _data_key(self, key: str) -> str:
        """The Redis key that holds ``key``'s value."""
        return DATA_PREFIX + key

    def _lock_key(self, name: str) -> str:
        """The Redis key that holds the lock ``name``."""
        return LOCK_PREFIX + name

    def _fence_key(self, name: str) -> str:
        """The counter that issues the lock ``name``'s fencing tokens: one per database."""
        return FENCE_KEY

    def _connect(self) -> _Client:
        """The worker's client, created on first use inside its event loop."""
        if self._client is None:
            client, size = self._new_client()
            lean = None
            if self.lean_commands:
                lean = LeanCommands(
                    self.client_url, {key: POOL_OPTIONS[key] for key in CONNECTION_OPTIONS}
                )
            self._client = _Client(
                redis=client,
                slots=asyncio.Semaphore(size),
                waiters=asyncio.Semaphore(max(1, size // 2)),
                lean=lean,
            )
        return self._client

    def _new_client(self) -> tuple[Any, int]:
        """A new redis-py client, and how many commands it may have in flight at once."""
        pool = aioredis.BlockingConnectionPool.from_url(
            self.client_url,
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
        return aioredis.Redis.from_pool(pool), pool.max_connections

    @property
    def client(self) -> Any:
        """The worker's redis-py client, created on first use inside its event loop."""
        return self._connect().redis

    def _command(self, write: bool = False) -> _Held:
        """Run commands on the client, one pool connection's worth, failing as our own error.

        redis-py's blocking pool wakes waiters unfairly: a task that has just
        released a connection can take it straight back, and under a few
        hundred concurrent requests some waiters starve past the pool's
        timeout. asyncio's semaphore queues them first come, first served, and
        holds exactly as many tasks as the pool has connections, so the pool
        itself never has to make anyone wait.

        A ``write`` in durable mode first takes one of the fewer
        :attr:`_Client.waiters`, before its connection, never while holding one.
        """
        client = self._connect()
        if write and self.durability is not None:
            return _Held(client, (client.waiters, client.slots))
        return _Held(client, (client.slots,))

    async def _call(self, client: _Client, *command: str | int) -> Any:
        """Send one command: on a connection of its own where it can (plain Redis)."""
        if client.lean is not None:
            return await client.lean.execute(*command)
        return await client.redis.execute_command(*command)

    async def _write(self, client: _Client, route: str, *command: str | int) -> Any:
        """Send one command that changes data; durable mode waits until replicas hold it.

        ``route`` is a key the command touches: on Cluster, the node to wait on.
        """
        if self.durability is None:
            return await self._call(client, *command)
        result, acked = await self._send_and_wait(client, route, command, self.durability)
        if int(acked) < self.durability.replicas:
            raise StoreUnavailable(
                f"Redis: {acked} of {self.durability.replicas} replica(s) confirmed the write "
                f"within {self.durability.timeout:g}s"
            )
        return result

    async def _send_and_wait(
        self, client: _Client, route: str, command: tuple[str | int, ...], wait: Durability
    ) -> tuple[Any, Any]:
        """``command`` then ``WAIT`` on one connection (WAIT counts that connection's writes)."""
        async with client.redis.pipeline(transaction=False) as pipe:
            pipe.execute_command(*command)
            pipe.execute_command("WAIT", wait.replicas, wait.ms)
            result, acked = await pipe.execute()
        return result, acked

    async def _eval(
        self,
        client: _Client,
        script: Script,
        keys: list[str],
        args: list[str | int],
        write: bool = True,
    ) -> Any:
        """Run one of the package's scripts by digest, or by text where Redis lacks it."""
        send = functools.partial(self._write, client, keys[0]) if write else None
        for command in ("EVALSHA", script.sha), ("EVAL", script.text):
            call = (*command, len(keys), *keys, *args)
            try:
                if send is None:
                    return await self._call(client, *call)
                return await send(*call)
            except redis.exceptions.NoScriptError:
                # Not run: a server that has not seen it (a restart, a new
                # master) answers NOSCRIPT without running anything.
                continue
        raise AssertionError("EVAL never answers NOSCRIPT")

    async def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            if client.lean is not None:
                await client.lean.aclose()
            await client.redis.aclose()

    async def ping(self) -> None:
        async with self._command() as client:
            await self._call(client, "PING")

    async def get(self, key: str) -> JSONValue:
        async with self._command() as client:
            raw = await self._call(client, "GET", self._data_key(key))
        return None if raw is None else loads(raw)

    async def set(self, key: str, value: JSONValue, ttl: float | None = None) -> None:
        raw, ttl = dumps(value), check_ttl(ttl)
        stored = self._data_key(key)
        async with self._command(write=True) as client:
            await self._write(client, stored, "SET", stored, raw, *_px(ttl))

    async def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        raw, ttl = dumps(value), check_ttl(ttl)
        stored = self._data_key(key)
        async with self._command(write=True) as client:
            return bool(await self._write(client, stored, "SET", stored, raw, "NX", *_px(ttl)))

    async def delete(self, key: str) -> bool:
        stored = self._data_key(key)
        async with self._command(write=True) as client:
            return bool(await self._write(client, stored, "DEL", stored))

    async def expire(self, key: str, ttl: float | None) -> bool:
        ttl = check_ttl(ttl)
        stored = self._data_key(key)
        async with self._command(write=True) as client:
            if ttl is not None:
                return bool(await self._write(client, stored, "PEXPIRE", stored, _ms(ttl)))
            return bool(await self._eval(client, PERSIST, [stored], []))

    async def incr_by(self, key: str, delta: int, ttl: float | None) -> int:
        stored = self._data_key(key)
        async with self._command(write=True) as client:
            if ttl is None:
                # Plain INCRBY: one round trip, no script.
                return int(await self._write(client, stored, "INCRBY", stored, delta))
            return int(await self._eval(client, INCR, [stored], [delta, _ms(ttl)]))

    async def try_acquire(self, name: str, token: str, lease: float) -> int:
        keys = [self._lock_key(name), self._fence_key(name)]
        async with self._command(write=True) as client:
            return int(await self._eval(client, ACQUIRE, keys, [token, _ms(lease)]))

    async def release(self, name: str, token: str) -> None:
        async with self._command() as client:
            await self._eval(client, UNLOCK, [self._lock_key(name)], [token], write=False)

    async def set_fenced(
        self, key: str, value: JSONValue, lease: Lease, ttl: float | None = None
    ) -> None:
        raw, ttl = dumps(value), check_ttl(ttl)
        keys = [self._lock_key(lease.name), self._data_key(key)]
        self._check_one_slot(keys)
        if not isinstance(lease, TokenLease):
            raise StaleLease(f"lock {lease.name!r} was not taken from this store")
        # The lock's key holds its holder's random token: the write checks that
        # this lease's holder still holds the lock.
        args: list[str | int] = [lease.holder, raw, "" if ttl is None else _ms(ttl)]
        async with self._command(write=True) as client:
            written = await self._eval(client, SET_FENCED, keys, args)
        if not written:
            raise StaleLease(f"lock {lease.name!r} is no longer held by token {lease.token}")

    def _check_one_slot(self, keys: list[str]) -> None:
        """Raise ValueError unless one script may touch all of ``keys`` (always, but on Cluster)."""

    # --- renewable leases and wake-ups (Store.lease, Store.listen) ---------------

    #: This worker's pub/sub connection, made by the first listener.
    _wakeups: Wakeups | None = None

    async def extend(self, name: str, token: str, lease: float) -> bool:
        async with self._command() as client:
            args: list[str | int] = [token, _ms(lease)]
            return bool(await self._eval(client, EXTEND, [self._lock_key(name)], args, write=False))

    def _wakeup_channels(self) -> Wakeups:
        if self._wakeups is None:
            db = parse_url(self.url).get("db", 0)
            self._wakeups = Wakeups(self.url, f"{WAKEUP_PREFIX}{db}:")
        return self._wakeups

    def listen(self, name: str) -> contextlib.AbstractAsyncContextManager[Wakeup]:
        """Listen for ``notify(name)`` from every worker of every host, over pub/sub."""
        return self._wakeup_channels().listen(name)

    async def notify(self, name: str) -> None:
        channel = self._wakeup_channels().channel(name)
        async with self._command() as client:
            await client.redis.publish(channel, "1")

    async def close(self) -> None:
        """Stop listening, then close as every shared store does."""
        wakeups, self._wakeups = self._wakeups, None
        if wakeups is not None:
            await wakeups.aclose()
        await super().close()
