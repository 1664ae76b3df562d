"""The base of every backend that several processes share: a polling lock and batched incr.

A store shared between processes (SQLite, Redis) cannot lend its waiters an
:class:`asyncio.Lock`: the holder may be in another process or on another
host. :class:`SharedStore` builds the store's :meth:`~qapp.state.Store.lock`
on two primitives each backend implements, :meth:`~SharedStore.try_acquire`
and :meth:`~SharedStore.release`, both keyed by a random token so that a
holder whose lease ran out can never free the next holder's lock. Taking a
lock also issues its *fencing token*, strictly increasing per lock name (from
a counter of the whole store, not one kept per name), in the same atomic step: the holder's
:class:`~qapp.state.Lease` carries it, and a fenced write (``set_fenced``) is
refused once the lock is no longer that holder's. A third,
:meth:`~SharedStore.extend`, renews a held lock's lease by the same token:
that is what :meth:`~qapp.state.Store.lease` hands its holder.

It also routes :meth:`~qapp.state.Store.incr` through an
:class:`~qapp.store.backends.coalesce.IncrBatcher`: increments of one key that
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

from qapp.store import metrics
from qapp.store.backends.coalesce import IncrBatcher
from qapp.store.errors import LockTimeout, StoreError
from qapp.store.interface import Store
from qapp.store.lease import Lease
from qapp.store.values import check_delta, check_ttl, lease_and_wait

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
    async def try_acquire(self, name: str, token: str, lease: float) -> int:
        """Take the lock ``name`` for ``token`` unless someone holds it.

        Returns 0 if it is held; else the lock's new fencing token, issued in
        the same atomic step and greater than every token issued before for
        ``name`` (a backend that issues none returns True, i.e. 1). A released
        lock leaves nothing behind: the tokens come from the store's counter.
        """

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
    ) -> contextlib.AbstractAsyncContextManager[Lease]:
        # The same lock as lease(): its Lease carries the fencing token.
        return self.lease(name, timeout, wait=wait)

    async def _attempt(self, name: str, token: str, lease: float) -> int:
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

    def _give_back(self, name: str, token: str, attempt: asyncio.Future[int]) -> None:
        if attempt.cancelled() or attempt.exception() is not None or not attempt.result():
            return
        release = asyncio.ensure_future(self.release(name, token))
        # Keep a reference until it is done, and never leave its error unread.
        self._giving_back.add(release)
        release.add_done_callback(self._giving_back.discard)
        release.add_done_callback(lambda task: task.cancelled() or task.exception())

    @contextlib.asynccontextmanager
    async def _polling_lock(
        self, name: str, lease: float, wait: float, token: str | None = None
    ) -> AsyncIterator[int]:
        """Hold the lock; what it yields is the fencing token the store issued."""
        token = token or secrets.token_hex(16)
        began = time.monotonic()
        deadline = began + wait
        delay = 0.001
        while not (fence := await self._attempt(name, token, lease)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                metrics.lock_wait(self.scheme, time.monotonic() - began, acquired=False)
                raise LockTimeout(f"lock {name!r} not acquired within {wait:g}s")
            # Exponential backoff with jitter keeps many waiters from polling
            # in step; the cap keeps the hand-over latency low.
            await asyncio.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, 0.05)
        metrics.lock_wait(self.scheme, time.monotonic() - began, acquired=True)
        try:
            yield fence
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

    # --- renewable leases (Store.lease) ----------------------------------------

    async def extend(self, name: str, token: str, lease: float) -> bool:
        """Make the lock ``name`` expire ``lease`` seconds from now if ``token`` holds it.

        True if it did; False if the lock has lapsed or someone else holds it.
        A backend overrides this with one token-checked operation in the
        store; this default says it cannot renew.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot renew a lock's lease")

    def lease(
        self, name: str, timeout: float = 5.0, *, wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[Lease]:
        lease, patience = lease_and_wait(timeout, wait)
        return self._renewable_lock(name, lease, patience)

    @contextlib.asynccontextmanager
    async def _renewable_lock(self, name: str, lease: float, wait: float) -> AsyncIterator[Lease]:
        token = secrets.token_hex(16)
        async with self._polling_lock(name, lease, wait, token) as fence:
            held = TokenLease(self, name, token, lease, fence)
            held.view = self
            try:
                yield held
            finally:
                if time.monotonic() - held.renewed_at > lease:
                    # Held past its lease: others may have taken the lock meanwhile.
                    metrics.lease_expired(self.scheme)


class TokenLease(Lease):
    """A lock of a :class:`SharedStore`, renewed in the store by its holder's token."""

    def __init__(
        self, store: SharedStore, name: str, holder: str, timeout: float, fence: int = 0
    ) -> None:
        super().__init__(name, timeout, fence)
        self.store = store
        #: The holder's random token, which the lock row (or key) holds.
        self.holder = holder
        #: When the lease last started to run (monotonic clock): taken or renewed.
        self.renewed_at = time.monotonic()

    async def renew(self) -> bool:
        began = time.monotonic()
        renewed = await self.store.extend(self.name, self.holder, self.timeout)
        if renewed:
            self.renewed_at = began
        return renewed
