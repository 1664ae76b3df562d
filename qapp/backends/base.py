"""The base of every backend that several processes share: a polling lock and batched incr.

A store shared between processes (SQLite, Redis) cannot lend its waiters an
:class:`asyncio.Lock`: the holder may be in another process or on another
host. :class:`SharedStore` builds the store's :meth:`~qapp.state.Store.lock`
on two primitives each backend implements, :meth:`~SharedStore.try_acquire`
and :meth:`~SharedStore.release`, both keyed by a random token so that a
holder whose lease ran out can never free the next holder's lock.

It also routes :meth:`~qapp.state.Store.incr` through an
:class:`~qapp.backends.coalesce.IncrBatcher`: increments of one key that
overlap in one worker go out as one atomic increment of their sum
(:meth:`~SharedStore.incr_by`), and each caller gets its own number from the
range the store returns.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator

from qapp.backends.coalesce import IncrBatcher
from qapp.state import LockTimeout, Store, StoreError, check_delta, check_ttl, lease_and_wait

__all__ = ["SharedStore"]

log = logging.getLogger(__name__)


class SharedStore(Store):
    """A :class:`~qapp.state.Store` shared by many processes; see the module docstring."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.incr_batches = IncrBatcher(self.incr_by)
        # Releases of locks that cancelled waiters took; see _attempt.
        self._giving_back: set[asyncio.Future[None]] = set()

    @abc.abstractmethod
    async def incr_by(self, key: str, delta: int, ttl: float | None) -> int:
        """One atomic increment in the store: ``delta`` at ``key``, ``ttl`` if it creates it."""

    @abc.abstractmethod
    async def try_acquire(self, name: str, token: str, lease: float) -> bool:
        """Take the lock ``name`` for ``token`` unless someone holds it; True if taken."""

    @abc.abstractmethod
    async def release(self, name: str, token: str) -> None:
        """Free the lock ``name`` if ``token`` still holds it; otherwise do nothing."""

    async def close(self) -> None:
        """Wait for increments in flight, then close the connection (:meth:`disconnect`)."""
        await self.incr_batches.aclose()
        await self.disconnect()

    @abc.abstractmethod
    async def disconnect(self) -> None:
        """Release the connection; the store may be connected again later."""

    async def incr(self, key: str, delta: int = 1, *, ttl: float | None = None) -> int:
        delta, ttl = check_delta(delta), check_ttl(ttl)
        return await self.incr_batches.incr(key, delta, ttl)

    def lock(
        self, name: str, timeout: float = 5.0, *, wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        lease, patience = lease_and_wait(timeout, wait)
        return self._polling_lock(name, lease, patience)

    async def _attempt(self, name: str, token: str, lease: float) -> bool:
        """One try at the lock that a cancelled waiter cannot leave half done.

        A waiter is cancelled when its client goes away. By then its acquire
        may already be on its way to the store, and may still take the lock
        for nobody: every other waiter would sit out the lease. So the try
        runs to its end regardless, and a lock it took is given back.
        """
        attempt = asyncio.ensure_future(self.try_acquire(name, token, lease))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            attempt.add_done_callback(functools.partial(self._give_back, name, token))
            raise

    def _give_back(self, name: str, token: str, attempt: asyncio.Future[bool]) -> None:
        if attempt.cancelled() or attempt.exception() is not None or not attempt.result():
            return
        release = asyncio.ensure_future(self.release(name, token))
        # Keep a reference until it is done, and never leave its error unread.
        self._giving_back.add(release)
        release.add_done_callback(self._giving_back.discard)
        release.add_done_callback(lambda task: task.cancelled() or task.exception())

    @contextlib.asynccontextmanager
    async def _polling_lock(self, name: str, lease: float, wait: float) -> AsyncIterator[None]:
        token = secrets.token_hex(16)
        deadline = time.monotonic() + wait
        delay = 0.001
        while not await self._attempt(name, token, lease):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(f"lock {name!r} not acquired within {wait:g}s")
            # Exponential backoff with jitter keeps many waiters from polling
            # in step; the cap keeps the hand-over latency low.
            await asyncio.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            # Release even if the holder was cancelled, so waiters need not
            # sit out the lease. The token makes a late release harmless. A
            # release that fails is logged, not raised: the work inside is
            # done (a 503 would invite a retry that does it twice), and the
            # lease frees the lock.
            try:
                await asyncio.shield(self.release(name, token))
            except StoreError as exc:
                log.warning("lock %r not released (its lease will free it): %s", name, exc)
