"""Merge the increments of one key that wait in one worker into one store call.

Under load, many requests of one worker increment the same counter at the
same moment, and each would pay its own Redis round trip or SQLite write
transaction. :class:`IncrBatcher` sends the first increment of a key at
once. Increments that arrive while it is in flight wait, and go out
together as the next single increment by their sum. The store answers with
the total after that sum, and each caller gets the value it would have got
had the batch's increments run one after another in arrival order::

    batch: +1 +1 +1 (sum 3)   store: INCRBY 3 -> 10   callers get 8, 9, 10

So every number is still handed out once: the batch owns the range below
the store's answer, and the store's own atomicity keeps ranges of different
batches, workers and hosts apart. Nothing waits for a timer; at low load a
batch is one increment and costs what it did before.

A caller that is cancelled after joining a batch does not take its
increment back: the batch is sent whole, and that number goes unused, just
as it would if a lone increment were cancelled after being sent. A failed
batch fails every caller in it with the store's own error; nothing of it
was counted, or (on a broken connection) it is as uncertain as a single
increment would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from qapp.store import metrics

#: ``(key, ttl)``: only increments with the same ttl share a batch, since the
#: ttl applies when the increment creates the key.
Slot: TypeAlias = tuple[str, float | None]
#: The store's own atomic increment: ``send(key, delta, ttl) -> new value``.
Send: TypeAlias = Callable[[str, int, float | None], Awaitable[int]]


class _Batch:
    """Increments of one slot that go to the store as one."""

    __slots__ = ("count", "future", "total")

    def __init__(self) -> None:
        self.total = 0
        #: Callers whose increments the batch carries.
        self.count = 0
        self.future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # Mark a failure as seen even if every caller was cancelled, so that
        # asyncio does not log "exception was never retrieved".
        self.future.add_done_callback(lambda f: f.cancelled() or f.exception())


class IncrBatcher:
    """Coalesce concurrent increments per key in one event loop; see the module doc."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._waiting: dict[Slot, _Batch] = {}
        self._senders: dict[Slot, asyncio.Task[None]] = {}
        #: Store calls made so far: fewer than increments when batching works.
        self.sends = 0

    async def incr(self, key: str, delta: int, ttl: float | None) -> int:
        """Add ``delta`` at ``key`` along with every increment waiting beside it."""
        slot = (key, ttl)
        batch = self._waiting.get(slot)
        if batch is None:
            batch = self._waiting[slot] = _Batch()
        batch.total += delta
        batch.count += 1
        # This caller's share ends here within the batch; no await since the
        # line above, so no other caller came in between.
        through = batch.total
        if slot not in self._senders:
            self._senders[slot] = asyncio.create_task(self._sender(slot))
        # Shielded: a cancelled caller must not cancel the batch of the others.
        end = await asyncio.shield(batch.future)
        # ``batch.total`` is final once the batch has been sent.
        return end - batch.total + through

    async def _sender(self, slot: Slot) -> None:
        """Send the slot's batches one at a time until none is waiting."""
        key, ttl = slot
        batch: _Batch | None = None
        try:
            while (batch := self._waiting.pop(slot, None)) is not None:
                self.sends += 1
                metrics.incr_batch(batch.count)
                try:
                    batch.future.set_result(await self._send(key, batch.total, ttl))
                except Exception as exc:
                    batch.future.set_exception(exc)
        except BaseException:
            # Cancelled (the loop is shutting down): nobody may wait forever.
            for pending in (batch, self._waiting.pop(slot, None)):
                if pending is not None:
                    pending.future.cancel()
            raise
        finally:
            del self._senders[slot]

    async def aclose(self) -> None:
        """Wait for batches in flight, so that a store closes after they land."""
        senders = list(self._senders.values())
        if senders:
            await asyncio.gather(*senders, return_exceptions=True)
