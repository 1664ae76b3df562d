"""Expired rows leave SQLite and PostgreSQL in short statements, never in one long one.

A table can hold any number of expired rows (a burst of sessions that all
ran out), and one ``DELETE`` of them all holds SQLite's single write lock
(or PostgreSQL's row locks) for as long as it runs. So a sweep deletes a
batch of rows per statement, each its own transaction, and rests between
statements at least as long as the last one took, so that other writers
(of this process and of others) get the store at least half the time.

A batch is bounded in time, not only in rows: what a number of rows costs
depends on the file (rows scattered over many pages, a cold cache) and on
how busy the store is, and on SQLite every operation of a worker queues on
its one connection behind a sweep statement. So each statement should take
no more than :data:`SWEEP_BUDGET`: the first is given :data:`SWEEP_FIRST`
rows, and each next one half as many after a statement that ran over the
budget, twice as many after one that took less than half of it, never
fewer than :data:`SWEEP_FLOOR` (so a sweep always ends) nor more than
:data:`SWEEP_BATCH`. The store says what each statement took (see
:data:`DeleteBatch`): PostgreSQL by its own clock, since its statements run
on a pooled connection beside the others; SQLite as the worker sees it, its
wait for its turn on the connection included, so the busier the worker,
the smaller the batches.

On SQLite the statements stay on the worker's connection rather than one of
the sweep's own: there, a worker's write would wait for SQLite's lock
inside its connection's thread, polling with sleeps of a millisecond and
more, and every read queued behind it would wait as long. What the sweep
does move off that connection is the checkpoint of the pages it changed:
after each statement, a connection of the sweep's own copies them from the
write-ahead log into the file, in a thread, waiting for no one. Left to the
worker's connection, a few dozen statements' pages would be copied at once
by whichever statement found the log past SQLite's threshold (1,000
pages), with every operation queued behind it waiting.

:class:`SweepCounts` is what a store's sweeps have done, kept so that an
operator (and a test) can see how the work was split; :class:`BackgroundSweep`
is how a store's writers start one now and then without waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeAlias

__all__ = [
    "SWEEP_BATCH",
    "SWEEP_BUDGET",
    "SWEEP_FIRST",
    "SWEEP_FLOOR",
    "BackgroundSweep",
    "DeleteBatch",
    "SweepCounts",
    "next_batch",
    "sweep_in_batches",
]

#: The most expired rows one sweep statement deletes.
SWEEP_BATCH = 500
#: Rows the first statement of a sweep is given: small, until the store has shown its pace.
SWEEP_FIRST = 64
#: The fewest rows a statement is given, however slow the last one was.
SWEEP_FLOOR = 8
#: Seconds one sweep statement should take at most: an operation queued
#: behind it is late by a fraction of the p99 of an operation under load
#: (several milliseconds), while it still deletes tens of rows even when
#: they are scattered over a large file.
SWEEP_BUDGET = 0.002

#: ``delete_batch(n)``: delete at most ``n`` expired rows in one statement;
#: return how many it deleted (fewer than ``n`` means it found no more) and the
#: seconds the statement took, as the store can tell.
DeleteBatch: TypeAlias = Callable[[int], Awaitable[tuple[int, float]]]


@dataclass
class SweepCounts:
    """What the sweeps of one store object have deleted, and in how many statements."""

    #: Sweep statements run.
    statements: int = 0
    #: Rows they deleted.
    rows: int = 0
    #: The most rows one statement deleted: never above the batch it was given.
    largest: int = 0

    def add(self, rows: int) -> None:
        """Count one statement that deleted ``rows`` rows."""
        self.statements += 1
        self.rows += rows
        self.largest = max(self.largest, rows)


def next_batch(
    batch: int,
    seconds: float,
    *,
    budget: float = SWEEP_BUDGET,
    floor: int = SWEEP_FLOOR,
    most: int = SWEEP_BATCH,
) -> int:
    """The rows to give the next statement, after one of ``batch`` rows took ``seconds``."""
    if seconds > budget:
        return max(floor, batch // 2)
    if seconds < budget / 2:
        return min(most, batch * 2)
    return batch


async def sweep_in_batches(
    delete_batch: DeleteBatch,
    counts: SweepCounts,
    *,
    first: int = SWEEP_FIRST,
    floor: int = SWEEP_FLOOR,
    most: int = SWEEP_BATCH,
    budget: float = SWEEP_BUDGET,
    go_on: Callable[[], bool] = lambda: True,
) -> int:
    """Delete expired rows a batch at a time until none is left; return how many went.

    Each statement is given a batch between ``floor`` and ``most`` rows, the
    first ``first``, sized so that it takes about ``budget`` seconds (see
    :func:`next_batch`). ``go_on()`` is asked between statements: False stops
    the sweep there (its store is closing), leaving the rest for the next one.
    """
    batch = max(floor, min(first, most))
    swept = 0
    while True:
        deleted, seconds = await delete_batch(batch)
        counts.add(deleted)
        swept += deleted
        if deleted < batch or not go_on():
            return swept
        batch = next_batch(batch, seconds, budget=budget, floor=floor, most=most)
        # Rest as long as the statement took: other operations get their turn
        # (on SQLite, those queued on the connection meanwhile run first).
        await asyncio.sleep(seconds)
        if not go_on():
            return swept


class BackgroundSweep:
    """The sweep a store's writers start now and then: one at a time, in the background.

    ``run(go_on)`` does one sweep, asking ``go_on()`` between its statements;
    it answers False once :meth:`stop` was called, so a closing store waits
    only for the statement in flight.
    """

    def __init__(
        self, run: Callable[[Callable[[], bool]], Coroutine[Any, Any, None]], every: float
    ) -> None:
        self._run = run
        self._every = every
        self._next = 0.0
        self._task: asyncio.Task[None] | None = None

    def start_if_due(self, now: float) -> None:
        """Start a sweep if ``every`` seconds have passed since the last and none runs."""
        if now < self._next or (self._task is not None and not self._task.done()):
            return
        self._next = now + self._every
        # In the background: the writer's answer waits for none of it.
        task = asyncio.create_task(self._run(lambda: self._task is task))
        self._task = task

    async def stop(self) -> None:
        """Let the sweep that runs end after its statement in flight, and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
