"""A lock waiter cancelled mid-attempt (its client went away) never strands the lock.

Found by the benchmark: wrk closing its connections cancels the requests in
flight, and a ``shared-locked`` request cancelled while its acquire was on
its way to the store took the lock for nobody. Every other worker then sat
out the whole lease.
"""

from __future__ import annotations

import asyncio
import contextlib

from qapp.state import Store, open_store


async def test_waiter_cancelled_mid_attempt_does_not_keep_the_lock(shared_store_url: str) -> None:
    """Cancelling a waiter at any point of its attempt leaves the lock free at once."""
    # The shared backends' polling lock; the memory store uses asyncio.Lock.
    async with await open_store(shared_store_url) as store:
        await _cancel_at_every_turn(store)


async def _cancel_at_every_turn(store: Store) -> None:

    async def hold() -> None:
        async with store.lock("l", timeout=30):
            await asyncio.sleep(30)

    # Cancel after 0, 1, 2, … turns of the loop, so that the cancel lands at
    # each point of an attempt: before it is sent, while the store runs it,
    # and once it has taken the lock.
    for turns in range(8):
        task = asyncio.create_task(hold())
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Far less than the 30 s lease: the lock is free, or given back promptly.
        async with store.lock("l", timeout=30, wait=2):
            pass
