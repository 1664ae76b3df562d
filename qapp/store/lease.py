"""The holder's side of a lock (:class:`Lease`) and a listener's side of a notification.

:meth:`qapp.state.Store.lock` hands out a :class:`Lease`: the lock's fencing
token, a fenced write, and (for stores shared between processes) renewal.
:meth:`qapp.state.Store.listen` hands out a :class:`Wakeup`. Both are part of
the store API; :mod:`qapp.state` exports them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from qapp.store.errors import StoreError

__all__ = ["FencedWriter", "Lease", "Wakeup", "keep_renewed"]


log = logging.getLogger(__name__)


class FencedWriter(Protocol):
    """Where a lease writes: the store (or namespace view) that handed it out."""

    async def set_fenced(
        self, key: str, value: Any, lease: Lease, ttl: float | None = None
    ) -> None:
        """Write ``value`` at ``key`` only while ``lease`` still holds its lock."""


class Lease:
    """A held lock, as :meth:`Store.lock` and :meth:`Store.lease` hand it to its holder.

    It carries the lock's fencing :attr:`token`, which :meth:`set` shows the
    store so that a superseded holder's write is refused, and (taken with
    :meth:`Store.lease`) lets its holder renew the lease while it works.
    This base is the handle of a lock without a lease (``memory://``): held
    until released, it can never be lost, so renewing has nothing to do.
    """

    def __init__(self, name: str, timeout: float, token: int = 0) -> None:
        #: The lock's name in the backend (a namespace view's prefix included).
        self.name = name
        #: Seconds each renewal gives the lease, counted from the renewal.
        self.timeout = timeout
        #: The fencing token: issued by the store when the lock was taken,
        #: strictly greater than every earlier holder's of the same name (from
        #: a counter of the whole store, so nothing is kept per name).
        self.token = token
        #: The store (or namespace view) whose ``lock`` took it: where
        #: :meth:`set` writes. Set by the store that hands the lease out.
        self.view: FencedWriter | None = None

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Write ``value`` at ``key`` of :attr:`view`, only while this lease holds the lock.

        Raises:
            StaleLease: the lock was released, its lease ran out, or a newer
                holder took it.
        """
        if self.view is None:
            raise RuntimeError("this lease was not handed out by a store")
        await self.view.set_fenced(key, value, self, ttl)

    async def renew(self) -> bool:
        """Hold the lock another ``timeout`` seconds from now; False if it was lost meanwhile.

        A lock is lost when its lease ran out and someone else took it: the
        holder no longer excludes anybody, and should say so.
        """
        return True


class Wakeup:
    """A listener's side of :meth:`Store.listen`: wait for a notification, or a timeout."""

    def __init__(self, event: asyncio.Event, pushes: Callable[[], bool]) -> None:
        self._event = event
        self._pushes = pushes

    @property
    def pushes(self) -> bool:
        """True while a ``notify`` by any sharer of the store reaches this listener.

        False when only this process's notifications do (SQLite), or while
        the channel that carries them is down: a waiter should then poll.
        """
        return self._pushes()

    async def wait(self, seconds: float) -> bool:
        """Wait at most ``seconds`` for a notification; True if one came."""
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


async def keep_renewed(held: Lease, stop: asyncio.Event, what: str) -> None:
    """Renew ``held`` every third of its lease until ``stop`` is set; ``what`` names it in logs.

    Gives up, with a warning, when the lease was lost (another holder may
    now run beside this one) or cannot be renewed; a store error is only
    logged, and the next third tries again.
    """
    while True:
        try:
            async with asyncio.timeout(held.timeout / 3):
                await stop.wait()
            return
        except TimeoutError:
            pass
        try:
            if not await held.renew():
                log.warning(
                    "the lock of %r lapsed before it was renewed; another holder "
                    "may run beside this one",
                    what,
                )
                return
        except NotImplementedError as exc:
            log.warning("the lock of %r cannot be renewed: %s", what, exc)
            return
        except StoreError as exc:
            log.warning("the lease of %r was not renewed (%s); trying again", what, exc)
