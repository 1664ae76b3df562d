"""Background refreshes of a cached value: one per key per worker, never raised to anyone.

A stale value (or a fresh one chosen for early refresh, XFetch) is answered
at once while one worker recomputes it here, in a job started by ``spawn``.
A failed refresh keeps the old value, is logged, and is not tried again by
this worker for :data:`REFRESH_BACKOFF` seconds.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from qapp.store.cacheapi import Spawn
from qapp.store.inflight import Entry, Found, StillComputing
from qapp.store.interface import Namespace, Store

__all__ = ["REFRESH_BACKOFF", "Refresher", "Slot"]

log = logging.getLogger(__name__)

#: Seconds after a failed background refresh before this worker tries again.
REFRESH_BACKOFF = 1.0

#: Where a flight runs: event loop, store object, namespace prefix and key.
Slot: TypeAlias = tuple[int, int, str, str]


class Refresher(abc.ABC):
    """The background-refresh half of :class:`~qapp.store.flight.Cached`."""

    #: XFetch's eagerness to refresh before expiry; 0 turns early refresh off.
    beta: float

    def __init__(self, spawn: Spawn | None) -> None:
        self._spawn = spawn or self._spawn_task
        self._refreshing: set[Slot] = set()
        self._refresh_failed: dict[Slot, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @abc.abstractmethod
    async def _settle(
        self, store: Store, key: str, call: Callable[[], Awaitable[Any]], seen: Entry | None
    ) -> Found:
        """Compute under the key's lock, or wait for whoever holds it (see ``Cached``)."""

    async def drain(self) -> None:
        """Wait for the background refreshes this object started itself (not via ``spawn``)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @staticmethod
    def _slot(store: Store, key: str) -> Slot:
        root, prefix = (store.store, store.prefix) if isinstance(store, Namespace) else (store, "")
        return (id(asyncio.get_running_loop()), id(root), prefix, key)

    def _early(self, entry: Entry, now: float) -> bool:
        """XFetch: True, with a probability growing towards expiry, to refresh a fresh value."""
        if self.beta <= 0 or entry.delta <= 0:
            return False
        # 1 - random() is in (0, 1]: its log is finite and not positive.
        ahead = -entry.delta * self.beta * math.log(1.0 - random.random())
        return now + ahead >= entry.fresh_until

    def _refresh_soon(
        self, store: Store, key: str, call: Callable[[], Awaitable[Any]], seen: Entry
    ) -> None:
        """Start one background refresh of ``key`` in this worker, unless one runs."""
        slot = self._slot(store, key)
        if slot in self._refreshing or self._refresh_failed.get(slot, 0.0) > time.monotonic():
            return
        self._refreshing.add(slot)
        self._spawn(functools.partial(self._refresh, store, key, call, seen, slot))

    async def _refresh(
        self,
        store: Store,
        key: str,
        call: Callable[[], Awaitable[Any]],
        seen: Entry,
        slot: Slot,
    ) -> None:
        try:
            # Done when a value newer than the one seen lands: computed here
            # under the lock, or by whichever worker holds it.
            await self._settle(store, key, call, seen)
            self._refresh_failed.pop(slot, None)
        except StillComputing:
            log.debug("refresh of %r still running elsewhere", key)
        except Exception as exc:
            # Never raised to anyone: the old value stays until its time is
            # up, and callers see that it is stale.
            self._refresh_failed[slot] = time.monotonic() + REFRESH_BACKOFF
            log.warning("refresh of %r failed; its stale value is kept: %r", key, exc)
        finally:
            self._refreshing.discard(slot)
            now = time.monotonic()
            for old in [s for s, until in self._refresh_failed.items() if until <= now]:
                del self._refresh_failed[old]

    def _spawn_task(self, job: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            await job()

        task = asyncio.get_running_loop().create_task(run())
        # Keep a reference until it is done: the loop keeps only a weak one.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
