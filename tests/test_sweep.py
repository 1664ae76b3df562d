"""The sweep of expired rows on SQLite and PostgreSQL: in batches, in the background, complete.

Each test makes 50,000 rows that expired long ago straight in the table (one
statement), then lets a write start the sweep, and reads the store's own
counts of what its sweep statements deleted.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from qapp.state import open_store
from qapp.store.backends import sqlite as sqlite_backend
from qapp.store.backends.postgres import PostgresStore
from qapp.store.backends.sqlite import SQLiteStore
from qapp.store.backends.sweep import SWEEP_BATCH, SweepCounts
from qapp.testing.postgres import PostgresServer

#: Expired rows each test starts with: twenty batches.
EXPIRED = 10_000
#: Seconds a test waits for the background sweep before it fails (a deadline, not a speed).
PATIENCE = 120.0


def expire_in_sqlite(path: Path) -> None:
    """Put :data:`EXPIRED` rows that expired long ago in the SQLite store at ``path``."""
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO qapp_kv (key, value, expires_at) VALUES (?, '1', 1.0)",
            ((f"old{n}",) for n in range(EXPIRED)),
        )
    conn.close()


def count_sqlite(path: Path) -> int:
    """How many rows the SQLite store at ``path`` holds, expired or not."""
    with sqlite3.connect(path) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM qapp_kv").fetchone()
    conn.close()
    return int(rows)


async def swept(counts: SweepCounts, rows: int) -> None:
    """Wait until the sweeps counted in ``counts`` have deleted ``rows`` rows.

    Polled: the counts are plain numbers, which the sweep's own task raises.
    """
    for _ in range(int(PATIENCE / 0.02)):
        if counts.rows >= rows:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"the sweep deleted {counts.rows} of {rows} rows in {PATIENCE:g}s")


def assert_batched(counts: SweepCounts) -> None:
    """The sweep deleted every expired row, never more than one batch in one statement."""
    assert counts.rows == EXPIRED
    assert counts.largest <= SWEEP_BATCH
    assert counts.statements >= EXPIRED // SWEEP_BATCH


async def test_sqlite_write_starts_a_batched_sweep_of_every_expired_row(tmp_path: Path) -> None:
    """A write starts the sweep without waiting for it, and the sweep deletes all 50,000 expired
    rows a batch per statement while live rows stay."""
    path = tmp_path / "q.db"
    async with await open_store(f"sqlite://{path}") as store:
        assert isinstance(store, SQLiteStore)
        expire_in_sqlite(path)
        await store.set("live", 1)
        # No await since the write's statement: its answer came before any sweep statement ran.
        assert store.sweeps.statements == 0
        await swept(store.sweeps, EXPIRED)
        assert_batched(store.sweeps)
        assert count_sqlite(path) == 1
        assert await store.get("live") == 1


async def test_sqlite_close_stops_the_sweep_between_batches(tmp_path: Path) -> None:
    """Closing the store ends its sweep after the statement in flight; the next sweep deletes
    the rest."""
    path = tmp_path / "q.db"
    store = await open_store(f"sqlite://{path}")
    assert isinstance(store, SQLiteStore)
    expire_in_sqlite(path)
    await store.set("live", 1)
    await store.close()
    assert 0 < count_sqlite(path) - 1 < EXPIRED
    async with await open_store(f"sqlite://{path}") as again:
        assert isinstance(again, SQLiteStore)
        await again.sweep()
        assert again.sweeps.largest <= SWEEP_BATCH
    assert count_sqlite(path) == 1


async def test_failed_sweep_is_logged_and_fails_no_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A write is answered as done even when the sweep it starts fails; the failure is logged,
    and the store serves on."""
    monkeypatch.setattr(sqlite_backend, "SWEEP", "DELETE FROM no_such_table RETURNING 1")
    async with await open_store(f"sqlite://{tmp_path / 'q.db'}") as store:
        with caplog.at_level(logging.WARNING, logger=sqlite_backend.__name__):
            assert await store.incr("c") == 1
            await store.close()  # waits for the sweep, which fails on its first statement
        assert "sweep of expired rows failed" in caplog.text
        assert await store.get("c") == 1


async def test_postgres_write_starts_a_batched_sweep_of_every_expired_row(
    postgresql_url: str, postgres_server: PostgresServer
) -> None:
    """A write starts the sweep without waiting for it, and the sweep deletes all 50,000 expired
    rows a batch per statement while live rows stay."""
    async with await open_store(postgresql_url) as maker:
        await maker.ping()  # the first connection makes the tables
    postgres_server.psql(
        "INSERT INTO qapp_kv (key, value, expires_at) "
        "SELECT convert_to('old' || n, 'UTF8'), '1', now() - interval '1 hour' "
        f"FROM generate_series(1, {EXPIRED}) AS n"
    )
    async with await open_store(postgresql_url) as store:
        assert isinstance(store, PostgresStore)
        await store.set("live", 1)
        assert store.sweeps.statements == 0
        await swept(store.sweeps, EXPIRED)
        assert_batched(store.sweeps)
        assert await store.get("live") == 1
    assert postgres_server.psql("SELECT count(*) FROM qapp_kv").strip() == "1"
