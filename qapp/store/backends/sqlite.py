"""SQLite store: state shared by every worker process on one host.

``sqlite:///abs/path.db`` names an absolute path, ``sqlite://rel/path.db`` one
relative to the working directory. Each worker keeps one aiosqlite connection,
opened in its own event loop.

Why it is correct under many coroutines and many processes:

- Every operation is one SQL statement in autocommit mode, fetched in the
  same driver call. No transaction is ever left open between two awaits, so
  a cancelled request cannot hold the write lock, and one task's rollback
  cannot discard another task's write.
- ``incr`` is ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` and ``add`` is an
  ``INSERT`` that updates only an expired row: never a read followed by a write.
  Increments of one key that overlap in one worker go out as one UPSERT of
  their sum, and each caller gets its own number from the range it returns
  (:mod:`qapp.coalesce`): one write transaction instead of many.
- A lock is a row taken by an UPSERT that succeeds only over an expired row,
  and deleted when released; its fencing token is the store's next, from the
  one counter row ``qapp_fence``, bumped in the same statement.
- WAL lets readers run beside the single writer, and ``busy_timeout`` makes a
  writer wait for the lock instead of failing with "database is locked".
- Expiry uses the wall clock (``time.time``), the only clock that every
  process agrees on. Expired rows are filtered on every read and swept now
  and then: a writer starts the sweep in the background, and it deletes as
  many rows per statement as take a couple of milliseconds, however many
  have expired (:mod:`~qapp.store.backends.sweep`), so it never holds the
  write lock, or the worker's connection, long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import aiosqlite

from qapp.store.backends.base import SharedStore
from qapp.store.backends.sqlite_keys import SQLiteKeys
from qapp.store.backends.sqlite_sql import (
    ADD,
    ADD_FENCE,
    DELETE,
    EXPIRE,
    EXTEND,
    FENCE_SCHEMA,
    GET,
    INCR,
    LOCK,
    SCHEMA,
    SET,
    SET_FENCED,
    SWEEP,
    SWEEP_LOCKS,
    UNLOCK,
)
from qapp.store.backends.sweep import (
    BackgroundSweep,
    DeleteBatch,
    SweepCounts,
    sweep_in_batches,
)
from qapp.store.errors import ConfigurationError, InvalidValue, StaleLease, StoreUnavailable
from qapp.store.values import JSONValue, check_ttl, dumps, loads

if TYPE_CHECKING:
    from qapp.store.lease import Lease

log = logging.getLogger(__name__)

#: Milliseconds a writer waits for another process's write lock.
BUSY_TIMEOUT_MS = 5_000
#: Seconds between sweeps of expired rows.
SWEEP_INTERVAL = 30.0
#: Free pages a sweep gives back to the file system at most (4 MiB of 4 KiB pages).
VACUUM_PAGES = 1024
#: Times a new connection's setup is tried when another worker holds the file,
#: and the seconds between tries.
SETUP_ATTEMPTS = 50
SETUP_RETRY_AFTER = 0.05
#: Free pages one ``incremental_vacuum`` statement gives back (256 KiB).
VACUUM_STEP = 64


def path_from_url(url: str) -> Path:
    """Return the database file named by a ``sqlite://`` URL."""
    parts = urlsplit(url)
    raw = unquote(parts.netloc + parts.path)
    if not raw or raw in {"/", ":memory:", "/:memory:"}:
        raise ConfigurationError(
            f"{url!r} names no file; an in-memory SQLite database is not shared, use memory://"
        )
    return Path(raw)


def check_folder(url: str, path: Path) -> None:
    """Raise :class:`ConfigurationError` if the folder that should hold ``path`` does not exist.

    A configured file's folder is never made here: a typo in the URL would
    otherwise create folders anywhere (``sqlite:///nonexistent-dir/x.db``
    made ``/nonexistent-dir``). Only the app's instance folder is made on
    demand, by the app (:func:`make_instance_folder`).
    """
    folder = path.parent
    try:
        folder.stat()
    except FileNotFoundError:
        raise ConfigurationError(
            f"folder {os.path.abspath(folder)!r} of {url!r} does not exist; create it first"
        ) from None
    except OSError:
        pass  # not a folder, or not ours to read: opening the file says why


def make_instance_folder(url: str, instance: Path) -> None:
    """Make the app's instance folder, owner-only, if ``url`` is a SQLite file directly in it.

    The folder holds user data (sessions, password hashes), hence 0700.
    """
    if urlsplit(url).scheme.lower() != "sqlite":
        return
    try:
        path = path_from_url(url)
    except ConfigurationError:
        return  # store_from_url says what is wrong with it
    if path.parent.resolve() == instance.resolve():
        instance.mkdir(mode=0o700, parents=True, exist_ok=True)


class SQLiteStore(SQLiteKeys, SharedStore):
    """A store in one SQLite file, shared by every process that opens it."""

    scheme = "sqlite"
    scope = "host"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.path = path_from_url(url)
        check_folder(url, self.path)
        self._conn: aiosqlite.Connection | None = None
        self._connecting = asyncio.Lock()
        self._sweeper = BackgroundSweep(self._sweep, SWEEP_INTERVAL)
        #: What this store object's sweeps have deleted, and in how many statements.
        self.sweeps = SweepCounts()

    async def _connection(self) -> aiosqlite.Connection:
        if self._conn is not None:
            return self._conn
        async with self._connecting:
            if self._conn is None:
                self._conn = await self._open()
        return self._conn

    def _probe(self) -> None:
        # Fail here, in a plain thread, rather than inside aiosqlite: a failed
        # aiosqlite.connect leaves its worker thread posting to the event loop
        # after the caller has moved on.
        # The file holds user data (sessions, password hashes): a new one is
        # created owner-only, and SQLite gives its -wal and -shm files the
        # same mode. Its folder must exist (see check_folder).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        sqlite3.connect(self.path).close()

    async def _open(self) -> aiosqlite.Connection:
        try:
            await asyncio.to_thread(self._probe)
            conn = await aiosqlite.connect(
                self.path,
                # None: autocommit. Each statement is its own transaction.
                isolation_level=None,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        try:
            for attempt in range(SETUP_ATTEMPTS):
                try:
                    await self._prepare(conn)
                    break
                except sqlite3.OperationalError as exc:
                    # Workers that open a new file at once can meet SQLite's
                    # deadlock rule while one of them turns on WAL mode: the
                    # loser is told "locked" at once, without the busy
                    # timeout. Every step is idempotent: take them again.
                    if "locked" not in str(exc) or attempt == SETUP_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(SETUP_RETRY_AFTER)
        except (sqlite3.Error, OSError) as exc:
            await conn.close()
            raise StoreUnavailable(f"cannot use SQLite database {self.path}: {exc}") from exc
        return conn

    @staticmethod
    async def _prepare(conn: aiosqlite.Connection) -> None:
        """Set a new connection up: its pragmas, then the tables if they are missing."""
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Lets the sweep give the space of expired rows back to the file
        # system. It takes effect only on a new, empty database, and only
        # before WAL mode (which writes the file's first page); an older
        # file needs vacuum() once.
        await conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        await conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable against a crash of the process (what kills
        # workers); only a power cut may lose the last commits.
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.executescript(SCHEMA)
        columns = await conn.execute_fetchall("PRAGMA table_info(qapp_locks)")
        if "fence" not in {column[1] for column in columns}:
            # Another worker may add it first; the column is there either way.
            with contextlib.suppress(sqlite3.OperationalError):
                await conn.execute(ADD_FENCE)
        await conn.executescript(FENCE_SCHEMA)

    async def _run(self, sql: str, params: dict[str, Any], *, script: bool = False) -> list[Any]:
        """Run one statement and fetch its rows in one driver call.

        ``script``: run it as a script, which steps it to its end (Python's
        driver steps a statement that returns no rows only once, and
        ``incremental_vacuum`` frees one page per step); no parameters, no rows.
        """
        conn = await self._connection()
        try:
            if script:
                await conn.executescript(sql)
                return []
            return list(await conn.execute_fetchall(sql, params))
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                # A broken connection (disk gone, file replaced): open a new one
                # next time instead of failing forever.
                await self._drop(conn)
            raise StoreUnavailable(f"SQLite: {exc}") from exc
        except (sqlite3.Error, ValueError) as exc:
            # aiosqlite raises ValueError once its connection is closed.
            await self._drop(conn)
            raise StoreUnavailable(f"SQLite: {exc}") from exc

    async def _drop(self, conn: aiosqlite.Connection) -> None:
        if self._conn is conn:
            self._conn = None
            with contextlib.suppress(sqlite3.Error, ValueError):
                await conn.close()

    async def _write(self, sql: str, params: dict[str, Any]) -> list[Any]:
        rows = await self._run(sql, params)
        self._sweeper.start_if_due(params["now"])
        return rows

    async def _sweep(self, go_on: Callable[[], bool]) -> None:
        """The sweep a writer starts: expired rows in batches, then free pages given back."""
        # Best effort, and never the writer's failure: its write is already
        # committed, and a caller told it failed would retry it (and count
        # twice). Reads filter expired rows anyway; the next sweep tries again.
        try:
            async with self._sweeping() as delete_batch:
                await sweep_in_batches(delete_batch, self.sweeps, go_on=go_on)
            if go_on():
                await self._run(SWEEP_LOCKS, {"now": time.time()})
                await self._free_pages(go_on)
        except StoreUnavailable as exc:
            log.warning("sweep of expired rows failed: %s", exc)

    async def _free_pages(self, go_on: Callable[[], bool]) -> None:
        """Give up to :data:`VACUUM_PAGES` free pages back to the file system, a few at a time.

        Each ``incremental_vacuum`` moves pages on the worker's connection
        like a delete does, so it keeps to the same budget: a step of
        :data:`VACUUM_STEP` pages, then a rest as long as it took.
        """
        given = 0
        while given < VACUUM_PAGES and go_on():
            free = await self._run("PRAGMA freelist_count", {})
            if not free or not free[0][0]:
                return
            began = time.monotonic()
            await self._run(f"PRAGMA incremental_vacuum({VACUUM_STEP})", {}, script=True)
            given += VACUUM_STEP
            await asyncio.sleep(time.monotonic() - began)

    @contextlib.asynccontextmanager
    async def _sweeping(self) -> AsyncIterator[DeleteBatch]:
        """One sweep's ``delete_batch``: each statement on the worker's connection, then a
        passive checkpoint of what it wrote from a connection of the sweep's own, in a thread.

        The statement is timed from here: its wait for its turn on the
        connection counts, so the busier the worker, the smaller the batches
        (see :mod:`~qapp.store.backends.sweep`).
        """
        await self._connection()  # the file exists, made owner-only, before the side opens it
        side = await asyncio.to_thread(self._open_side)
        try:

            async def delete_batch(batch: int) -> tuple[int, float]:
                began = time.perf_counter()
                rows = await self._run(SWEEP, {"now": time.time(), "batch": batch})
                seconds = time.perf_counter() - began
                await asyncio.to_thread(self._checkpoint, side)
                return len(rows), seconds

            yield delete_batch
        finally:
            await asyncio.to_thread(side.close)

    def _open_side(self) -> sqlite3.Connection:
        try:
            # mode=rw: never the one to create the file (_probe makes it owner-only).
            # Used by one thread at a time, not always the same one (asyncio.to_thread).
            return sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=rw",
                uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc

    @staticmethod
    def _checkpoint(side: sqlite3.Connection) -> None:
        try:
            side.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc

    async def sweep(self) -> int:
        """Delete every expired row now, a batch per statement; return how many went.

        Dead holders' lock rows go too (they are not counted).
        """
        async with self._sweeping() as delete_batch:
            gone = await sweep_in_batches(delete_batch, self.sweeps)
        await self._run(SWEEP_LOCKS, {"now": time.time()})
        return gone

    async def connect(self) -> None:
        await self._connection()

    async def disconnect(self) -> None:
        # It stops after the statement in flight, before the connection it uses is closed.
        await self._sweeper.stop()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def vacuum(self) -> int:
        """Delete expired rows and rebuild the file at its smallest; return the bytes freed.

        The sweep frees space as it goes on a database made by this version;
        an older file (or one that never shrinks) needs this once, with the
        server stopped or quiet: ``qapp vacuum sqlite:///path.db``.
        """
        before = self.path.stat().st_size
        await self.sweep()
        await self._run("PRAGMA auto_vacuum = INCREMENTAL", {})
        await self._run("VACUUM", {})
        return before - self.path.stat().st_size

    async def ping(self) -> None:
        await self._run("SELECT 1", {})

    async def get(self, key: str) -> JSONValue:
        rows = await self._run(GET, {"key": key, "now": time.time()})
        return loads(rows[0][0]) if rows else None

    async def set(self, key: str, value: JSONValue, ttl: float | None = None) -> None:
        raw, ttl = dumps(value), check_ttl(ttl)
        now = time.time()
        expires = None if ttl is None else now + ttl
        await self._write(SET, {"key": key, "value": raw, "expires": expires, "now": now})

    async def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        raw, ttl = dumps(value), check_ttl(ttl)
        now = time.time()
        expires = None if ttl is None else now + ttl
        rows = await self._write(ADD, {"key": key, "value": raw, "expires": expires, "now": now})
        return bool(rows)

    async def delete(self, key: str) -> bool:
        now = time.time()
        rows = await self._run(DELETE, {"key": key})
        return bool(rows) and (rows[0][0] is None or rows[0][0] > now)

    async def expire(self, key: str, ttl: float | None) -> bool:
        ttl = check_ttl(ttl)
        now = time.time()
        expires = None if ttl is None else now + ttl
        rows = await self._write(EXPIRE, {"key": key, "expires": expires, "now": now})
        return bool(rows)

    async def incr_by(self, key: str, delta: int, ttl: float | None) -> int:
        now = time.time()
        expires = None if ttl is None else now + ttl
        rows = await self._write(INCR, {"key": key, "delta": delta, "expires": expires, "now": now})
        if not rows:
            raise InvalidValue(f"value at {key!r} is not an integer")
        return int(rows[0][0])

    async def try_acquire(self, name: str, token: str, lease: float) -> int:
        now = time.time()
        params = {"name": name, "token": token, "expires": now + lease, "now": now}
        rows = await self._run(LOCK, params)
        return int(rows[0][0]) if rows else 0

    async def set_fenced(
        self, key: str, value: JSONValue, lease: Lease, ttl: float | None = None
    ) -> None:
        raw, ttl = dumps(value), check_ttl(ttl)
        now = time.time()
        params = {
            "key": key,
            "value": raw,
            "expires": None if ttl is None else now + ttl,
            "now": now,
            "name": lease.name,
            "fence": lease.token,
        }
        if not await self._write(SET_FENCED, params):
            raise StaleLease(f"lock {lease.name!r} is no longer held by token {lease.token}")

    async def release(self, name: str, token: str) -> None:
        await self._run(UNLOCK, {"name": name, "token": token})

    async def extend(self, name: str, token: str, lease: float) -> bool:
        now = time.time()
        params = {"name": name, "token": token, "expires": now + lease, "now": now}
        return bool(await self._run(EXTEND, params))
