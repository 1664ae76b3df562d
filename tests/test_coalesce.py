"""Coalesced increments (qapp.store.backends.coalesce) on SQLite and Redis: same numbers.

Each test runs on a real SQLite file and a real redis-server. ``sends`` is
the batcher's own count of store calls, read to prove that increments were
really merged (a test that passes without merging proves nothing here).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor

from qapp.state import InvalidValue, Store, open_store
from qapp.store.backends.coalesce import IncrBatcher

PROCESSES = 4


def batcher(store: Store) -> IncrBatcher:
    """The store's batcher; only the shared backends have one."""
    found = getattr(store, "incr_batches", None)
    assert isinstance(found, IncrBatcher)
    return found


async def test_concurrent_increments_share_writes_and_stay_unique(shared_store_url: str) -> None:
    """500 concurrent increments in one loop give 1..500 with far fewer store calls."""
    async with await open_store(shared_store_url) as store:
        values = await asyncio.gather(*(store.incr("c") for _ in range(500)))
        assert sorted(values) == list(range(1, 501))
        assert await store.get("c") == 500
        assert 0 < batcher(store).sends < 100


async def test_lone_increment_is_sent_at_once(shared_store_url: str) -> None:
    """Without concurrency every increment is its own store call, in order."""
    async with await open_store(shared_store_url) as store:
        assert [await store.incr("c") for _ in range(5)] == [1, 2, 3, 4, 5]
        assert batcher(store).sends == 5


async def test_mixed_deltas_claim_disjoint_ranges(shared_store_url: str) -> None:
    """Callers with different deltas in one batch each own a distinct slice of the total."""
    deltas = [random.randint(1, 5) for _ in range(300)]
    async with await open_store(shared_store_url) as store:
        values = await asyncio.gather(*(store.incr("c", d) for d in deltas))
        assert 0 < batcher(store).sends < len(deltas)
    # Each caller owns (value - delta, value]; together they tile (0, total].
    claimed = sorted(zip(values, deltas, strict=True))
    end = 0
    for value, delta in claimed:
        assert value - delta == end
        end = value
    assert end == sum(deltas)


async def test_keys_and_ttls_are_batched_apart(shared_store_url: str) -> None:
    """Increments of different keys never share a batch; each key counts alone."""
    async with await open_store(shared_store_url) as store:
        calls = [store.incr(key) for key in ("a", "b") for _ in range(50)]
        calls += [store.incr("t", ttl=30) for _ in range(50)]
        values = await asyncio.gather(*calls)
        assert sorted(values[:50]) == sorted(values[50:100]) == list(range(1, 51))
        assert sorted(values[100:]) == list(range(1, 51))
        assert (await store.get("a"), await store.get("b"), await store.get("t")) == (50, 50, 50)


async def test_cancelled_callers_leave_the_others_their_numbers(shared_store_url: str) -> None:
    """Cancelling half the callers of a batch neither breaks it nor repeats a number."""
    async with await open_store(shared_store_url) as store:
        tasks = [asyncio.create_task(store.incr("c")) for _ in range(100)]
        await asyncio.sleep(0)  # every task has joined the batch by now
        for task in tasks[::2]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        kept = [r for r in results if isinstance(r, int)]
        assert all(isinstance(r, asyncio.CancelledError) for r in results[::2])
        assert len(kept) == 50
        assert len(set(kept)) == 50
        assert set(kept) <= set(range(1, 101))
        # The batch went out whole: the cancelled callers' numbers are unused, not reused.
        assert await store.get("c") == 100
        assert await store.incr("c") == 101


async def test_a_failed_batch_fails_every_caller_and_changes_nothing(
    shared_store_url: str,
) -> None:
    """Every caller of a batch on a non-integer gets InvalidValue, and the value stays."""
    async with await open_store(shared_store_url) as store:
        await store.set("c", "text")
        results = await asyncio.gather(
            *(store.incr("c") for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, InvalidValue) for r in results)
        assert await store.get("c") == "text"
        await store.set("c", 5)
        assert await store.incr("c") == 6


def incr_in_child(url: str, count: int, start_at: float) -> tuple[list[int], int]:
    """In a child process: ``count`` concurrent increments; their values and store calls."""

    async def run() -> tuple[list[int], int]:
        async with await open_store(url) as store:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            values = await asyncio.gather(*(store.incr("c") for _ in range(count)))
            return list(values), batcher(store).sends

    return asyncio.run(run())


async def test_batches_of_several_processes_never_overlap(shared_store_url: str) -> None:
    """4 processes × 300 coalesced increments give exactly 1..1200, with merged writes."""
    start_at = time.time() + 1.5
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")  # as hypercorn starts its workers
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        results = await asyncio.gather(
            *(
                loop.run_in_executor(pool, incr_in_child, shared_store_url, 300, start_at)
                for _ in range(PROCESSES)
            )
        )
    values = sorted(v for child, _ in results for v in child)
    assert values == list(range(1, 1201))
    assert 0 < sum(sends for _, sends in results) < 1200 / 2
    async with await open_store(shared_store_url) as store:
        assert await store.get("c") == 1200
