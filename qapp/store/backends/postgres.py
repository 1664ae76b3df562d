"""PostgreSQL store: state shared by every worker on every host, in one database.

``postgresql://user:password@host:port/database`` (or ``postgres://``), with
libpq-style query options such as ``sslmode``; any other query option is
sent to the server as a setting (``?search_path=myschema``). The tables
``qapp_kv``, ``qapp_locks`` and ``qapp_fence`` are created at connect if missing.

The driver is asyncpg. Over a pool of 20 and 2 s of single-statement
``UPSERT … RETURNING`` increments on a local server, it did 9.6k–10.0k/s from
one task and 24.8k–26.4k/s from 32, against psycopg 3's 9.8k–10.2k/s and
13.6k–13.9k/s: the same latency and 1.8× the throughput under concurrency,
with its pool's reset of each connection on release turned off (see
:func:`_keep_session`), which alone had halved it to 4.5k–5.4k/s and 16.5k–17.2k/s.

Why it is correct under many coroutines, processes and hosts:

- Every operation is one SQL statement in autocommit, on a connection
  borrowed from the worker's pool for that statement alone. No transaction
  is ever open across an await of ours, so a cancelled request holds no row
  lock and rolls back nobody else's work.
- ``add``, ``incr`` and the lock are ``INSERT … ON CONFLICT DO UPDATE … WHERE
  … RETURNING``: one statement that PostgreSQL makes atomic, never a read
  followed by a write. Increments of one key that overlap in one worker go
  out as one UPSERT of their sum (:mod:`qapp.store.backends.coalesce`).
- Taking a lock issues its fencing token in the same statement, from the
  store's fence counter (``qapp_fence``, 64 rows: a name always draws from
  one, so that takers of other names need not queue on it); releasing it
  deletes the row, and
  renewing it is one ``UPDATE`` checked against the holder's random token. A
  fenced write is one statement that share-locks the lock's row while the
  holder's lease lasts, so no newer holder can take the lock between its
  check and its write.
- Expiry is computed on the database server's clock
  (``statement_timestamp()``), so hosts whose clocks disagree still agree on
  what has expired. Expired rows are never returned, and writers sweep them
  now and then in the background, as many per statement as take the server
  a couple of milliseconds (:mod:`~qapp.store.backends.sweep`).
- Values are JSON text in a ``json`` column, not ``jsonb``: ``json`` keeps the
  text exactly as :func:`~qapp.state.dumps` wrote it, so a read returns what
  ``loads(dumps(value))`` does. ``jsonb`` would reorder an object's keys,
  turn the float ``1e+20`` into the integer ``100000000000000000000``, and
  refuse ``"\\u0000"``. Keys and lock names are ``bytea`` (their UTF-8): a
  ``text`` column cannot hold the NUL that keys on the other backends may.
- Every driver, network and server error becomes
  :class:`~qapp.state.StoreUnavailable`, the driver's exception kept as
  ``__cause__``. After an error that means the connections are gone (the
  server restarted), the pool replaces every connection on its next use, so
  the store recovers by itself. Nothing is retried by us: an ``incr`` whose
  connection broke may have run.

``notify`` is a ``NOTIFY`` that reaches every worker of every host: each
worker that listens keeps one connection outside its pool, which LISTENs
(see :class:`Wakeups`). A notification is a hint: while that connection is
down, :attr:`~qapp.state.Wakeup.pushes` is False and waiters poll. Over 50
waits each on a local server, a ``cached`` waiter on another store object had
the value a median 0.9–1.1 ms (90th percentile 1.7–2.2 ms) after it was
written with notifications, against 51–59 ms (108–121 ms) polling without.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import parse_qs, urlsplit

import asyncpg
import asyncpg.exceptions

from qapp.store.backends.base import SharedStore
from qapp.store.backends.postgres_keys import PostgresKeys
from qapp.store.backends.postgres_sql import (
    ADD,
    DELETE,
    EXPIRE,
    EXTEND,
    FENCE_SHARDS,
    GET,
    INCR,
    LOCK,
    NOTIFY,
    SCHEMA,
    SCHEMA_PRESENT,
    SET,
    SET_FENCED,
    SWEEP,
    SWEEP_LOCKS,
    UNLOCK,
)
from qapp.store.backends.postgres_wakeups import Wakeups, payload
from qapp.store.backends.sweep import BackgroundSweep, SweepCounts, sweep_in_batches
from qapp.store.errors import (
    ConfigurationError,
    InvalidValue,
    StaleLease,
    StoreError,
    StoreUnavailable,
)
from qapp.store.lease import Wakeup
from qapp.store.urls import redact
from qapp.store.values import JSONValue, check_ttl, dumps, loads

if TYPE_CHECKING:
    from qapp.store.lease import Lease

__all__ = ["PostgresStore"]

log = logging.getLogger(__name__)

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"

#: Connections one worker may hold; a waiter beyond that queues for ACQUIRE_TIMEOUT.
POOL_SIZE = 20
#: Seconds to wait for a pooled connection (including opening one) before a 503.
ACQUIRE_TIMEOUT = 5.0
#: Seconds to open one connection; a refused one fails at once.
CONNECT_TIMEOUT = 2.0
#: Seconds one statement may run before it is cancelled and reported.
COMMAND_TIMEOUT = 5.0
#: Seconds an idle pooled connection is kept before it is closed.
IDLE_LIFETIME = 60.0
#: Seconds between sweeps of expired rows.
SWEEP_INTERVAL = 30.0
#: Seconds ``disconnect`` waits for connections in use before cutting them.
CLOSE_TIMEOUT = 5.0
#: The values libpq (and so asyncpg) accepts for ``sslmode``.
SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
#: Ends of a 64-bit signed integer, what ``incr`` counts in (as on Redis and SQLite).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

#: The longest ttl sent to the server, in seconds (about 317 years): a longer one
#: would overflow PostgreSQL's interval, and outlives every reader anyway.
TTL_CAP = 1e10
#: The store's tables, all created together (see SCHEMA).
TABLES = ("qapp_kv", "qapp_locks", "qapp_fence")


# Errors after which the pool's connections are presumed gone: the network,
# the connection, or the server itself (shutdown, crash, restart).
_CONNECTION_LOST = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    # The tables are gone (the database was recreated): new connections
    # create them again (see _prepare).
    asyncpg.exceptions.UndefinedTableError,
)
# Every error that means "the store cannot answer now". TimeoutError is an
# OSError: a connect, pool or statement timeout.
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def check_url(url: str) -> None:
    """Raise :class:`ConfigurationError` unless ``url`` is a PostgreSQL URL asyncpg can use."""

    def bad(why: str) -> ConfigurationError:
        return ConfigurationError(f"bad PostgreSQL URL {redact(url)!r}: {why}")

    try:
        parts = urlsplit(url)
        if parts.port == 0:  # a port that is not a number in 0..65535 raises here
            raise ValueError("port 0; use 1 to 65535")
        options = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise bad(str(exc)) from exc
    if parts.scheme.lower() not in {"postgresql", "postgres"}:
        raise bad("the scheme must be postgresql:// or postgres://")
    if "/" in parts.path.strip("/"):
        raise bad("the path names one database, like /qapp")
    if parts.fragment:
        raise bad("a #fragment means nothing here")
    for name, values in options.items():
        if len(values) > 1:
            raise bad(f"option {name!r} is given {len(values)} times")
    sslmode = options.get("sslmode", ["prefer"])[0]
    if sslmode not in SSLMODES:
        raise bad(f"sslmode must be one of {', '.join(sorted(SSLMODES))}, not {sslmode!r}")


def _key(key: str) -> bytes:
    return key.encode("utf-8")


def _seconds(ttl: float | None) -> float | None:
    return None if ttl is None else min(ttl, TTL_CAP)


def fence_shard(name: bytes) -> int:
    """The row of the fence counter that issues the lock ``name``'s tokens, always the same."""
    return zlib.crc32(name) % FENCE_SHARDS


async def _prepare(conn: Connection) -> None:
    """Make sure the tables exist, on every new connection (the database may be new)."""
    # Checked first, so that connecting to a database that has them takes no
    # lock at all (CREATE INDEX IF NOT EXISTS locks the table even when the
    # index exists).
    if not await conn.fetchval(SCHEMA_PRESENT):
        await conn.execute(SCHEMA)


async def _keep_session(conn: Connection) -> None:
    """Reset nothing when a connection goes back to the pool.

    asyncpg's default reset (``RESET ALL``, ``UNLISTEN *``, …) costs one more
    round trip per statement and halved throughput. No statement here leaves
    session state behind, and asyncpg still rolls back a transaction left
    open before it calls this.
    """


class PostgresStore(PostgresKeys, SharedStore):
    """A store in one PostgreSQL database, shared by every worker on every host."""

    scheme = "postgresql"
    scope = "cluster"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        # Parse now, so that a malformed URL fails at startup.
        check_url(url)
        self._pool: Pool | None = None
        self._pooling = asyncio.Lock()
        self._sweeper = BackgroundSweep(self._sweep, SWEEP_INTERVAL)
        #: What this store object's sweeps have deleted, and in how many statements.
        self.sweeps = SweepCounts()
        # This worker's LISTEN connection, made by the first listener.
        self._wakeups: Wakeups | None = None

    async def _get_pool(self) -> Pool:
        """The worker's pool, made on first use inside its event loop (no connection yet)."""
        if self._pool is not None:
            return self._pool
        async with self._pooling:
            if self._pool is None:
                pool: Pool = asyncpg.create_pool(
                    self.url,
                    # 0: making the pool opens nothing, so it cannot fail; each
                    # connection is opened on demand, and again after a failure.
                    min_size=0,
                    max_size=POOL_SIZE,
                    max_inactive_connection_lifetime=IDLE_LIFETIME,
                    timeout=CONNECT_TIMEOUT,
                    command_timeout=COMMAND_TIMEOUT,
                    init=_prepare,
                    reset=_keep_session,
                )
                try:
                    await pool
                except _UNAVAILABLE as exc:
                    raise self._unavailable(exc, connected=False) from exc
                self._pool = pool
        return self._pool

    def _unavailable(self, exc: BaseException, *, connected: bool = True) -> StoreUnavailable:
        if not isinstance(exc, TimeoutError):
            what = f"{type(exc).__name__}: {exc}"
        elif connected:
            what = f"no answer within {COMMAND_TIMEOUT:g}s"
        else:
            what = f"no connection free (or opened) within {ACQUIRE_TIMEOUT:g}s"
        return StoreUnavailable(f"PostgreSQL at {redact(self.url)}: {what}")

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run one statement on a pooled connection and return its rows; errors become ours."""
        pool = await self._get_pool()
        connected = False
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                connected = True
                return await conn.fetch(sql, *args)
        except asyncpg.exceptions.NumericValueOutOfRangeError as exc:
            raise InvalidValue(f"the counter would leave the 64-bit range: {exc}") from exc
        except _UNAVAILABLE as exc:
            if isinstance(exc, _CONNECTION_LOST):
                # The server went away, so every pooled connection is likely
                # dead too: have each replaced on its next use rather than let
                # each fail one request first.
                await pool.expire_connections()
            raise self._unavailable(exc, connected=connected) from exc

    async def _write(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run a writing statement, then start a sweep of expired rows if one is due."""
        rows = await self._fetch(sql, *args)
        self._sweeper.start_if_due(time.monotonic())
        return rows

    async def _sweep(self, go_on: Callable[[], bool]) -> None:
        # Best effort: reads filter expired rows anyway; the next sweep tries again.
        try:
            await sweep_in_batches(self._sweep_batch, self.sweeps, go_on=go_on)
            await self._fetch(SWEEP_LOCKS)
        except StoreError as exc:
            log.warning("sweep of expired rows failed: %s", exc)

    async def _sweep_batch(self, batch: int) -> tuple[int, float]:
        # Timed by the server: the wait for a pooled connection and for this
        # event loop is no part of what the statement costs the store. Its
        # clock is the wall clock, so it is held within the time seen from
        # here: a clock set back or forward mid-statement cannot make the
        # rest after it negative or long.
        began = time.monotonic()
        rows = await self._fetch(SWEEP, batch)
        waited = time.monotonic() - began
        deleted: int = rows[0][0]
        seconds: float = rows[0][1]
        return deleted, min(max(seconds, 0.0), waited)

    async def sweep(self) -> int:
        """Delete every expired row now, a batch per statement; return how many went."""
        return await sweep_in_batches(self._sweep_batch, self.sweeps)

    async def disconnect(self) -> None:
        wakeups, self._wakeups = self._wakeups, None
        if wakeups is not None:
            await wakeups.aclose()
        await self._sweeper.stop()
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
        except asyncio.CancelledError:
            pool.terminate()
            raise
        except Exception as exc:  # whatever closing fails on, the pool must not outlive us
            # Connections still busy past the timeout, or broken: cut them.
            log.warning("PostgreSQL pool not closed cleanly, terminated: %s", exc)
            pool.terminate()

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    async def get(self, key: str) -> JSONValue:
        rows = await self._fetch(GET, _key(key))
        return loads(rows[0][0]) if rows else None

    async def set(self, key: str, value: JSONValue, ttl: float | None = None) -> None:
        raw, ttl = dumps(value), check_ttl(ttl)
        await self._write(SET, _key(key), raw, _seconds(ttl))

    async def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        raw, ttl = dumps(value), check_ttl(ttl)
        return bool(await self._write(ADD, _key(key), raw, _seconds(ttl)))

    async def delete(self, key: str) -> bool:
        rows = await self._fetch(DELETE, _key(key))
        return bool(rows) and bool(rows[0][0])

    async def expire(self, key: str, ttl: float | None) -> bool:
        ttl = check_ttl(ttl)
        return bool(await self._write(EXPIRE, _key(key), _seconds(ttl)))

    async def incr_by(self, key: str, delta: int, ttl: float | None) -> int:
        if not INT64_MIN <= delta <= INT64_MAX:
            raise InvalidValue(f"delta {delta} is outside the 64-bit range")
        rows = await self._write(INCR, _key(key), delta, _seconds(ttl))
        if not rows:
            raise InvalidValue(f"value at {key!r} is not an integer")
        value: int = rows[0][0]
        return value

    async def try_acquire(self, name: str, token: str, lease: float) -> int:
        key = _key(name)
        rows = await self._fetch(LOCK, key, token, _seconds(lease), fence_shard(key))
        fence: int = rows[0][0] if rows else 0
        return fence

    async def release(self, name: str, token: str) -> None:
        await self._fetch(UNLOCK, _key(name), token)

    async def extend(self, name: str, token: str, lease: float) -> bool:
        return bool(await self._fetch(EXTEND, _key(name), token, _seconds(lease)))

    async def set_fenced(
        self, key: str, value: JSONValue, lease: Lease, ttl: float | None = None
    ) -> None:
        raw, ttl = dumps(value), check_ttl(ttl)
        rows = await self._write(
            SET_FENCED, _key(key), raw, _seconds(ttl), _key(lease.name), lease.token
        )
        if not rows:
            raise StaleLease(f"lock {lease.name!r} is no longer held by token {lease.token}")

    def listen(self, name: str) -> contextlib.AbstractAsyncContextManager[Wakeup]:
        """Listen for ``notify(name)`` from every worker of every host, over LISTEN/NOTIFY."""
        if self._wakeups is None:
            self._wakeups = Wakeups(
                lambda: asyncpg.connect(
                    self.url, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT
                ),
                _UNAVAILABLE,
            )
        return self._wakeups.listen(name)

    async def notify(self, name: str) -> None:
        await self._fetch(NOTIFY, payload(name))
