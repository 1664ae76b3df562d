"""Several OS processes share one SQLite file or one Redis: counts stay exact."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from qapp.state import LockTimeout, open_store

PROCESSES = 4


def _pool() -> ProcessPoolExecutor:
    # spawn, as hypercorn starts its workers: nothing is inherited.
    return ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn"))


def incr_many(url: str, count: int, start_at: float) -> list[int]:
    """In a child process: ``count`` concurrent increments, started together."""

    async def run() -> list[int]:
        async with await open_store(url) as store:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            return list(await asyncio.gather(*(store.incr("c") for _ in range(count))))

    return asyncio.run(run())


def read_sleep_write(url: str, count: int, use_lock: bool, start_at: float) -> None:
    """In a child process: ``count`` read-await-write increments, locked or not."""

    async def one(store: object) -> None:
        from qapp.state import Store

        assert isinstance(store, Store)
        if use_lock:
            async with store.lock("n", timeout=30):
                await bump(store)
        else:
            await bump(store)

    async def bump(store: object) -> None:
        from qapp.state import Store

        assert isinstance(store, Store)
        value = await store.get("n") or 0
        await asyncio.sleep(0.002)
        await store.set("n", value + 1)

    async def run() -> None:
        async with await open_store(url) as store:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            await asyncio.gather(*(one(store) for _ in range(count)))

    asyncio.run(run())


def die_holding_lock(url: str, lease: float) -> None:
    """In a child process: take a lock and exit abruptly without releasing it."""

    async def run() -> None:
        store = await open_store(url)
        await store.lock("held", timeout=lease).__aenter__()
        os._exit(0)

    asyncio.run(run())


async def read(url: str, key: str) -> object:
    async with await open_store(url) as store:
        return await store.get(key)


async def test_4_processes_250_incr_each_give_1000(shared_store_url: str) -> None:
    """4 processes × 250 concurrent increments give exactly 1000 distinct numbers."""
    start_at = time.time() + 1.5
    loop = asyncio.get_running_loop()
    with _pool() as pool:
        futures = [
            loop.run_in_executor(pool, incr_many, shared_store_url, 250, start_at)
            for _ in range(PROCESSES)
        ]
        results = await asyncio.gather(*futures)
    values = sorted(v for result in results for v in result)
    assert values == list(range(1, 1001))
    assert await read(shared_store_url, "c") == 1000


async def test_cross_process_lock_excludes(shared_store_url: str) -> None:
    """Read-await-write under the store lock from 4 processes loses nothing."""
    start_at = time.time() + 1.5
    loop = asyncio.get_running_loop()
    with _pool() as pool:
        await asyncio.gather(
            *(
                loop.run_in_executor(pool, read_sleep_write, shared_store_url, 25, True, start_at)
                for _ in range(PROCESSES)
            )
        )
    assert await read(shared_store_url, "n") == 100


async def test_without_lock_the_same_work_loses_updates(shared_store_url: str) -> None:
    """The control: the same read-await-write without the lock does lose updates."""
    start_at = time.time() + 1.5
    loop = asyncio.get_running_loop()
    with _pool() as pool:
        await asyncio.gather(
            *(
                loop.run_in_executor(pool, read_sleep_write, shared_store_url, 25, False, start_at)
                for _ in range(PROCESSES)
            )
        )
    final = await read(shared_store_url, "n")
    assert isinstance(final, int)
    assert final < 100


async def test_dead_holder_blocks_only_for_its_lease(shared_store_url: str) -> None:
    """A process that dies holding a lock blocks others no longer than the lease."""
    child = multiprocessing.get_context("spawn").Process(
        target=die_holding_lock, args=(shared_store_url, 2.0)
    )
    began = time.monotonic()
    child.start()
    await asyncio.to_thread(child.join, 30)
    assert child.exitcode == 0
    async with await open_store(shared_store_url) as store:
        # The dead process's lock is really held...
        with pytest.raises(LockTimeout):
            async with store.lock("held", timeout=5, wait=0.1):
                pytest.fail("acquired a lock a dead process still holds")
        # ...until its lease runs out.
        async with store.lock("held", timeout=5, wait=5):
            waited = time.monotonic() - began
    assert waited <= 2.0 + 1.0


def _open_new_file_at_once(url: str, start: float) -> int:
    """In a child process: wait for ``start``, open the store, increment once; the count."""

    async def go() -> int:
        store = await open_store(url)
        try:
            return await store.incr("opened")
        finally:
            await store.close()

    time.sleep(max(0.0, start - time.time()))
    return asyncio.run(go())


def test_workers_opening_a_new_sqlite_file_at_once_all_start(tmp_path: Path) -> None:
    """Six processes open the same new SQLite file at the same moment, ten times over:
    every one starts (the loser of SQLite's race to turn on WAL mode tries again)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(6, mp_context=context) as pool:
        for round_ in range(10):
            url = f"sqlite://{tmp_path / f'new-{round_}.db'}"
            start = time.time() + 1.0
            counts = list(pool.map(_open_new_file_at_once, [url] * 6, [start] * 6))
            assert sorted(counts) == [1, 2, 3, 4, 5, 6]
