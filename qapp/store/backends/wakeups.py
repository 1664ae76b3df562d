"""The listener side of ``notify``: one connection per worker wakes this worker's listeners.

A store that can carry notifications between processes (Redis pub/sub,
PostgreSQL LISTEN/NOTIFY) keeps one connection per worker for them, outside
its pool, rather than one per waiter. :class:`WakeupReader` is what the two
share: the listeners of this worker by name, the reader task started by the
first of them, and the wait for the connection to be ready. Each backend
keeps the connection itself (:meth:`WakeupReader._read`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator

from qapp.store.lease import Wakeup

__all__ = ["WakeupReader"]


class WakeupReader(abc.ABC):
    """This worker's listeners by name, and the one task that hears notifications for them."""

    #: The reader task's name, for a person reading a list of tasks.
    task_name = "qapp-wakeups"

    def __init__(self, url: str) -> None:
        self.url = url
        # Name -> the events of this worker's listeners of that name.
        self._listeners: dict[str, set[asyncio.Event]] = {}
        self._reader: asyncio.Task[None] | None = None

    @abc.abstractmethod
    async def _read(self) -> None:
        """Keep the connection, waking listeners with :meth:`_wake`, until cancelled."""

    @abc.abstractmethod
    def _ready(self) -> asyncio.Event:
        """What a first listener awaits: set once the connection hears, or has failed to."""

    @abc.abstractmethod
    def _pushes(self) -> bool:
        """True while notifications from every sharer of the store reach this worker."""

    #: Seconds a first listener waits for :meth:`_ready`; after that it polls.
    ready_wait = 1.0

    @contextlib.asynccontextmanager
    async def _listen(self, key: str) -> AsyncIterator[Wakeup]:
        """Be woken by each notification of ``key`` while inside the block."""
        event = asyncio.Event()
        listeners = self._listeners.setdefault(key, set())
        listeners.add(event)
        try:
            if self._reader is None:
                self._reader = asyncio.create_task(self._read(), name=self.task_name)
            ready = self._ready()
            if not ready.is_set():
                # Until the connection hears, a notification could be missed;
                # a listener that cannot wait for it simply polls.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.ready_wait):
                        await ready.wait()
            yield Wakeup(event, self._pushes)
        finally:
            listeners.discard(event)
            if not listeners and self._listeners.get(key) is listeners:
                del self._listeners[key]

    def _wake(self, key: str | None = None) -> None:
        """Wake the listeners of ``key``, or all of them (the connection was lost)."""
        groups = self._listeners.values() if key is None else [self._listeners.get(key, set())]
        for listeners in groups:
            for event in listeners:
                event.set()
