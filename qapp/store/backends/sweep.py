"""Expired rows leave SQLite and PostgreSQL in small batches, never in one long statement.

A table can hold any number of expired rows (a burst of sessions that all
ran out), and one ``DELETE`` of them all holds SQLite's single write lock
(or PostgreSQL's row locks) for as long as it runs: 300,000 rows held every
other writer for 184 ms. So a sweep deletes :data:`SWEEP_BATCH` rows per
statement, each its own transaction, and rests between statements as long
as the last one took, so that other writers (of this process and of
others) get the store at least half the time while a sweep runs.

:class:`SweepCounts` is what a store's sweeps have done, kept so that an
operator (and a test) can see how the work was split; :class:`BackgroundSweep`
is how a store's writers start one now and then without waiting for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

__all__ = ["SWEEP_BATCH", "BackgroundSweep", "SweepCounts", "sweep_in_batches"]

#: The most expired rows one sweep statement deletes.
SWEEP_BATCH = 500


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


async def sweep_in_batches(
    delete_batch: Callable[[int], Awaitable[int]],
    counts: SweepCounts,
    *,
    batch: int = SWEEP_BATCH,
    go_on: Callable[[], bool] = lambda: True,
) -> int:
    """Delete expired rows ``batch`` at a time until none is left; return how many went.

    ``delete_batch(n)`` deletes at most ``n`` expired rows in one statement
    and says how many it deleted; fewer than ``n`` means it found no more.
    ``go_on()`` is asked between statements: False stops the sweep there
    (its store is closing), leaving the rest for the next one.
    """
    swept = 0
    while True:
        began = time.monotonic()
        deleted = await delete_batch(batch)
        counts.add(deleted)
        swept += deleted
        if deleted < batch or not go_on():
            return swept
        # Rest as long as the statement ran: other writers get their turn.
        await asyncio.sleep(time.monotonic() - began)
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
