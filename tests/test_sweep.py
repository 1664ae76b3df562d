"""The sweep of expired rows on SQLite and PostgreSQL: in batches, in the background, complete.

The store tests make :data:`EXPIRED` rows that expired long ago straight in
the table (one statement), then let a write start the sweep, and read the
store's own counts of what its sweep statements deleted. The first tests
drive :func:`sweep_in_batches` with a table of their own, whose statements
take the seconds the test says: how the batch follows them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qapp.state import open_store
from qapp.store.backends import sqlite as sqlite_backend
from qapp.store.backends.postgres import PostgresStore
from qapp.store.backends.sqlite import SQLiteStore
from qapp.store.backends.sweep import (
    SWEEP_BATCH,
    SWEEP_BUDGET,
    SWEEP_FIRST,
    SWEEP_FLOOR,
    DeleteBatch,
    SweepCounts,
    next_batch,
    sweep_in_batches,
)
from qapp.testing.postgres import PostgresServer

#: Expired rows each test starts with: twenty batches.
EXPIRED = 10_000
#: Seconds a test waits for the background sweep before it fails (a deadline, not a speed).
PATIENCE = 120.0


#: Seconds of a statement well over the budget, and well under half of it.
SLOW, QUICK = 2 * SWEEP_BUDGET, SWEEP_BUDGET / 10


@dataclass
class Table:
    """Expired rows that statements delete, each taking the seconds ``took(n)`` says."""

    rows: int
    took: Callable[[int], float]
    #: The batch each statement was given.
    batches: list[int] = field(default_factory=list)

    async def delete_batch(self, batch: int) -> tuple[int, float]:
        self.batches.append(batch)
        deleted = min(batch, self.rows)
        self.rows -= deleted
        return deleted, self.took(len(self.batches))


@pytest.mark.fast
@pytest.mark.parametrize(
    ("batch", "seconds", "then"),
    [
        (64, SLOW, 32),
        (64, QUICK, 128),
        (64, 0.75 * SWEEP_BUDGET, 64),
        (SWEEP_FLOOR + 1, SLOW, SWEEP_FLOOR),
        (300, QUICK, SWEEP_BATCH),
    ],
)
def test_next_batch_halves_after_an_overrun_and_doubles_well_under_budget(
    batch: int, seconds: float, then: int
) -> None:
    """Over the budget: half the rows (never below the floor); under half of it: twice as many
    (never above SWEEP_BATCH); in between: the same."""
    assert next_batch(batch, seconds) == then


@pytest.mark.fast
async def test_statement_that_overran_shrinks_the_next_batch() -> None:
    """The third statement runs over the budget, the fourth is given half its rows, and the
    batch grows again once statements are quick; every row goes."""
    table = Table(rows=5_000, took=lambda n: SLOW if n == 3 else QUICK)
    counts = SweepCounts()
    assert await sweep_in_batches(table.delete_batch, counts) == 5_000
    assert table.batches[:6] == [SWEEP_FIRST, 128, 256, 128, 256, SWEEP_BATCH]
    assert set(table.batches[6:]) == {SWEEP_BATCH}
    assert table.rows == 0
    assert counts == SweepCounts(statements=len(table.batches), rows=5_000, largest=SWEEP_BATCH)


@pytest.mark.fast
async def test_slow_statements_shrink_the_batch_to_the_floor_and_the_sweep_still_ends() -> None:
    """However slow each statement, the batch stops at the floor and the sweep deletes every
    row, never more in one statement than it was given."""
    table = Table(rows=200, took=lambda n: SLOW)
    counts = SweepCounts()
    assert await sweep_in_batches(table.delete_batch, counts) == 200
    assert table.batches[:4] == [SWEEP_FIRST, 32, 16, SWEEP_FLOOR]
    assert set(table.batches[4:]) == {SWEEP_FLOOR}
    assert table.rows == 0
    assert counts.rows == 200
    assert counts.statements == len(table.batches)
    assert counts.largest == SWEEP_FIRST


@pytest.mark.fast
async def test_sweep_ends_on_the_statement_that_finds_fewer_rows_than_its_batch() -> None:
    """A statement that deletes fewer rows than it was given found the last ones: none more."""
    table = Table(rows=SWEEP_FIRST + 10, took=lambda n: QUICK)
    counts = SweepCounts()
    assert await sweep_in_batches(table.delete_batch, counts) == SWEEP_FIRST + 10
    assert table.batches == [SWEEP_FIRST, 2 * SWEEP_FIRST]
    assert counts == SweepCounts(statements=2, rows=SWEEP_FIRST + 10, largest=SWEEP_FIRST)


@pytest.mark.fast
async def test_go_on_false_stops_the_sweep_between_statements() -> None:
    """``go_on()`` is asked after each statement: False ends the sweep there, rows left."""
    table = Table(rows=10_000, took=lambda n: QUICK)
    counts = SweepCounts()
    gone = await sweep_in_batches(table.delete_batch, counts, go_on=lambda: len(table.batches) < 3)
    assert table.batches == [SWEEP_FIRST, 128, 256]
    assert gone == counts.rows == SWEEP_FIRST + 128 + 256
    assert table.rows == 10_000 - gone
    assert counts.statements == 3


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


def recording(delete_batch: DeleteBatch) -> tuple[DeleteBatch, list[tuple[int, int, float]]]:
    """``delete_batch``, noting each statement's batch, rows deleted and seconds reported."""
    seen: list[tuple[int, int, float]] = []

    async def noted(batch: int) -> tuple[int, float]:
        deleted, seconds = await delete_batch(batch)
        seen.append((batch, deleted, seconds))
        return deleted, seconds

    return noted, seen


def assert_followed(seen: list[tuple[int, int, float]]) -> None:
    """Each batch after the first is what :func:`next_batch` made of the statement before;
    every statement but the last deleted its whole batch, and the last found the end."""
    assert seen[0][0] == SWEEP_FIRST
    for (batch, deleted, seconds), (following, _, _) in itertools.pairwise(seen):
        assert deleted == batch
        assert seconds >= 0
        assert following == next_batch(batch, seconds)
    assert seen[-1][1] < seen[-1][0]
    assert sum(deleted for _, deleted, _ in seen) == EXPIRED


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


async def test_sqlite_sweep_batches_follow_the_seconds_its_statements_took(
    tmp_path: Path,
) -> None:
    """On a real SQLite file, each statement's batch is sized from the seconds the one before
    took, and the sweep deletes every expired row."""
    path = tmp_path / "q.db"
    async with await open_store(f"sqlite://{path}") as store:
        assert isinstance(store, SQLiteStore)
        expire_in_sqlite(path)
        async with store._sweeping() as delete_batch:
            noted, seen = recording(delete_batch)
            assert await sweep_in_batches(noted, store.sweeps) == EXPIRED
        assert_followed(seen)
    assert count_sqlite(path) == 0


async def test_sqlite_sweep_checkpoints_what_it_deleted_into_the_database_file(
    tmp_path: Path,
) -> None:
    """The sweep copies its statements' pages from the write-ahead log into the file itself:
    the file alone, without its log, holds none of the expired rows once the sweep is done."""
    path = tmp_path / "q.db"
    async with await open_store(f"sqlite://{path}") as store:
        assert isinstance(store, SQLiteStore)
        expire_in_sqlite(path)
        assert await store.sweep() == EXPIRED
        alone = tmp_path / "alone.db"
        shutil.copyfile(path, alone)  # the database file, not its -wal
        assert count_sqlite(path) == 0
    assert count_sqlite(alone) == 0


async def test_sqlite_sweep_of_a_store_not_yet_opened_makes_its_file_owner_only(
    tmp_path: Path,
) -> None:
    """A sweep before any other operation opens the store as any operation does: the file
    it makes is the owner's alone, the sweep's own connection opening it only after."""
    path = tmp_path / "q.db"
    store = SQLiteStore(f"sqlite://{path}")
    try:
        assert await store.sweep() == 0
    finally:
        await store.close()
    assert path.stat().st_mode & 0o777 == 0o600


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


async def _expired_rows_in_postgres(url: str, server: PostgresServer) -> None:
    """The store's tables, made by a first connection, holding EXPIRED rows an hour expired."""
    async with await open_store(url) as maker:
        await maker.ping()
    server.psql(
        "INSERT INTO qapp_kv (key, value, expires_at) "
        "SELECT convert_to('old' || n, 'UTF8'), '1', now() - interval '1 hour' "
        f"FROM generate_series(1, {EXPIRED}) AS n"
    )


async def test_postgres_write_starts_a_batched_sweep_of_every_expired_row(
    postgresql_url: str, postgres_server: PostgresServer
) -> None:
    """A write starts the sweep without waiting for it, and the sweep deletes all 50,000 expired
    rows a batch per statement while live rows stay."""
    await _expired_rows_in_postgres(postgresql_url, postgres_server)
    async with await open_store(postgresql_url) as store:
        assert isinstance(store, PostgresStore)
        await store.set("live", 1)
        assert store.sweeps.statements == 0
        await swept(store.sweeps, EXPIRED)
        assert_batched(store.sweeps)
        assert await store.get("live") == 1
    assert postgres_server.psql("SELECT count(*) FROM qapp_kv").strip() == "1"


async def test_postgres_sweep_batches_follow_the_seconds_the_server_reports(
    postgresql_url: str, postgres_server: PostgresServer
) -> None:
    """Each statement's batch is sized from the seconds the server says the one before took,
    and the sweep deletes every expired row."""
    await _expired_rows_in_postgres(postgresql_url, postgres_server)
    async with await open_store(postgresql_url) as store:
        assert isinstance(store, PostgresStore)
        noted, seen = recording(store._sweep_batch)
        assert await sweep_in_batches(noted, store.sweeps) == EXPIRED
    assert_followed(seen)
    assert postgres_server.psql("SELECT count(*) FROM qapp_kv").strip() == "0"


async def test_a_new_sqlite_file_gives_the_space_of_expired_rows_back(tmp_path: Path) -> None:
    """A new file is made with incremental auto-vacuum, and a sweep hands its free pages back."""
    path = tmp_path / "qapp.db"
    store = SQLiteStore(f"sqlite://{path}")
    async with store:
        rows = await store._run("PRAGMA auto_vacuum", {})
        assert rows[0][0] == 2  # INCREMENTAL
        await store.set_many({f"k{n}": "x" * 2000 for n in range(2000)}, ttl=0.2)
        await store.set("kept", 1)
        grown = path.stat().st_size
        await asyncio.sleep(0.3)
        assert await store.sweep() == 2000
        await store._run("PRAGMA wal_checkpoint(TRUNCATE)", {})
        (before,) = (await store._run("PRAGMA freelist_count", {}))[0]
        assert before > sqlite_backend.VACUUM_STEP
        await store._free_pages(lambda: True)
        (after,) = (await store._run("PRAGMA freelist_count", {}))[0]
        assert after <= max(0, before - sqlite_backend.VACUUM_PAGES)
        await store._run("PRAGMA wal_checkpoint(TRUNCATE)", {})
        assert path.stat().st_size <= grown - (before - after) * 4096 // 2
        assert await store.get("kept") == 1
