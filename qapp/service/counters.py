"""The race lab's five counter strategies: the same increment, five homes for its state.

Each strategy answers one question: *what number does this request get?* A
correct counter hands ``N`` concurrent requests the numbers ``1..N``, each
once. Which strategies manage it, and where, is the lesson:

=================  ===============================  ===========  ======================
strategy           how                              1 worker     N workers
=================  ===============================  ===========  ======================
``unsafe``         worker dict: read, await, write  loses        loses and repeats
``locked``         the same under an asyncio.Lock   correct      repeats: each worker
                                                                 counts alone
``shared-unsafe``  store get, await, store set      loses        loses
``shared-locked``  store lock around get/set        correct      correct, slower
``atomic``         store ``incr``                   correct      correct
=================  ===============================  ===========  ======================

Cooperative multitasking removes preemption, not races: any ``await`` between
a read and the write that depends on it lets another request in.

The process-local strategies keep their numbers in :class:`WorkerCounters`,
one per worker, created when the worker starts serving. The shared ones keep
theirs in the store they are given (the service gives them the ``counter``
namespace of its default store), under the strategy's name, so they are
exactly as shared as that store: on ``memory://`` they are per worker too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from qapp.state import Store

__all__ = [
    "STRATEGIES",
    "Owner",
    "Strategy",
    "WorkerCounters",
    "atomic",
    "locked",
    "shared_locked",
    "shared_unsafe",
    "unsafe",
]

#: Whose counter a strategy changes: this worker's own, or the store's.
Owner: TypeAlias = Literal["worker", "shared"]

#: Lease of the ``shared-locked`` lock in seconds: a holder that dies blocks
#: the others at most this long. The critical section takes milliseconds.
LOCK_LEASE = 5.0
#: Seconds a ``shared-locked`` request waits for its turn before a 503. Each
#: of a few hundred concurrent requests queues behind all the others.
LOCK_WAIT = 60.0


@dataclass
class WorkerCounters:
    """Process state of one worker: its own counters and the lock that guards them.

    Every hypercorn worker builds its own, so two workers never see each
    other's numbers. That is the point of ``locked`` under several workers.
    """

    values: dict[str, int] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def other_work() -> None:
    """The ``await`` between a read and its write: here, a bare yield to the loop.

    It stands for any real await a handler makes there (a query, a call to
    another service). The loop runs other requests before this one resumes,
    exactly as it would during real I/O. No sleep is added to widen the
    window: with a hundred requests in flight, one yield is enough. The
    memory store's methods never suspend, so without this ``shared-unsafe``
    on ``memory://`` would be correct by accident.
    """
    await asyncio.sleep(0)


async def unsafe(mine: WorkerCounters, store: Store) -> int:
    """Read the worker's number, await, write it back plus one: loses updates.

    Every request that reads before the first one writes reads the same
    number, so they all write and answer the same next number: increments are
    lost and numbers handed out twice, even in one worker with no threads.
    """
    value = mine.values.get("unsafe", 0)
    await other_work()
    mine.values["unsafe"] = value + 1
    return value + 1


async def locked(mine: WorkerCounters, store: Store) -> int:
    """The same read, await, write under the worker's asyncio.Lock: correct in one worker.

    The lock lets one request at a time from read to write, so the await can
    no longer interleave them. But the lock and the number are process state:
    each worker counts 1, 2, 3… on its own, and several workers hand out the
    same numbers.
    """
    async with mine.lock:
        value = mine.values.get("locked", 0)
        await other_work()
        mine.values["locked"] = value + 1
        return value + 1


async def shared_unsafe(mine: WorkerCounters, store: Store) -> int:
    """Store ``get``, await, store ``set``: a shared number, still racing.

    Moving the number into a store that every worker sees fixes nothing on
    its own: the read and the write are two round trips, and any request (of
    any worker) that reads between them overwrites this one's increment.
    """
    key = "shared-unsafe"
    value = await store.get(key) or 0
    await other_work()
    await store.set(key, value + 1)
    return int(value) + 1


async def shared_locked(mine: WorkerCounters, store: Store) -> int:
    """``shared-unsafe`` inside the store's lock: correct across workers, but slower.

    The store's lock is honoured by every worker (and host) sharing the
    store, so only one request at a time runs get, await, set. Correct, at
    the price of queueing every request behind a lock that costs round
    trips to take and to give back.
    """
    key = "shared-locked"
    async with store.lock(key, timeout=LOCK_LEASE, wait=LOCK_WAIT):
        value = await store.get(key) or 0
        await other_work()
        await store.set(key, value + 1)
        return int(value) + 1


async def atomic(mine: WorkerCounters, store: Store) -> int:
    """The store's ``incr``: read and write are one operation. Correct everywhere.

    Redis runs ``INCRBY`` and SQLite runs ``INSERT … ON CONFLICT DO UPDATE …
    RETURNING`` as single operations, so no other request can come between
    the read and the write: no lock and no lost update, on every worker of
    every host that shares the store.
    """
    return await store.incr("atomic")


#: An increment: given this worker's counters and the main store, the new number.
Increment: TypeAlias = Callable[[WorkerCounters, Store], Awaitable[int]]


@dataclass(frozen=True)
class Strategy:
    """A named way to increment a counter, and whose counter it changes."""

    name: str
    scope: Owner
    increment: Increment

    async def current(self, mine: WorkerCounters, store: Store) -> int:
        """The counter's value now: this worker's, or the store's."""
        if self.scope == "worker":
            return mine.values.get(self.name, 0)
        value = await store.get(self.name)
        return int(value or 0)

    async def reset(self, mine: WorkerCounters, store: Store) -> None:
        """Set the counter back to 0: only this worker's, or the one in the store."""
        if self.scope == "worker":
            mine.values.pop(self.name, None)
        else:
            await store.delete(self.name)


#: Every strategy by name, in the order the lesson tells them.
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("unsafe", "worker", unsafe),
        Strategy("locked", "worker", locked),
        Strategy("shared-unsafe", "shared", shared_unsafe),
        Strategy("shared-locked", "shared", shared_locked),
        Strategy("atomic", "shared", atomic),
    )
}
