"""The :class:`Store` interface every backend implements, and its :class:`Namespace` view.

A view is itself a Store (a prefix on every key and lock), so both live
here: :meth:`Store.namespace` makes one, and nothing imports in a circle.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType

from qapp.store.lease import Lease, Wakeup
from qapp.store.values import JSONValue, Scope

__all__ = [
    "MAX_SCAN_BATCH",
    "NAMESPACE_PATTERN",
    "SCAN_BATCH",
    "Namespace",
    "Store",
    "check_batch",
    "check_namespace",
    "check_prefix",
]

#: Keys a prefix scan reads (and a clear deletes) per round trip unless told otherwise.
SCAN_BATCH = 500
#: The largest batch a scan may ask for: one round trip's work stays small.
MAX_SCAN_BATCH = 10_000


class Store(abc.ABC):
    """An async key-value store of JSON values with TTLs, atomic counters and locks.

    Use it as an async context manager (enter connects, exit closes), or call
    :meth:`connect` and :meth:`close` yourself. Every backend connects lazily
    too, so a store whose server is down at startup starts working as soon
    as the server is back.

    What a key's absence looks like, everywhere: :meth:`get` says None,
    :meth:`get_many` leaves the key out of its dict, and :meth:`ttl` says
    None too, while a key that never expires has a ttl of ``math.inf``. An
    expired key is absent, and is never yielded by :meth:`scan`.
    """

    #: The URL scheme that selects this backend.
    scheme: str
    #: Who sees this store's data.
    scope: Scope

    def __init__(self, url: str) -> None:
        self.url = url
        # Name -> the events of this process's listeners (see listen()).
        self._listeners: dict[str, set[asyncio.Event]] = {}

    @property
    def name(self) -> str:
        """The backend's short name, as ``/health`` reports it."""
        return self.scheme

    async def connect(self) -> None:
        """Open the connection now, raising :class:`StoreUnavailable` if it fails."""
        await self.ping()

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection; the store may be connected again later."""

    async def __aenter__(self) -> Store:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""

    @abc.abstractmethod
    async def get(self, key: str) -> JSONValue:
        """Return the value at ``key``, or None if it is absent or expired."""

    @abc.abstractmethod
    async def set(self, key: str, value: JSONValue, ttl: float | None = None) -> None:
        """Store ``value`` at ``key``, expiring after ``ttl`` seconds if given."""

    @abc.abstractmethod
    async def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent (or expired); True if it did, atomically."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there (and not expired)."""

    @abc.abstractmethod
    async def expire(self, key: str, ttl: float | None) -> bool:
        """Give a live ``key`` a new ttl (None: never expire); True if the key was there.

        This is how a sliding expiry is kept: touch the key on each use.
        """

    @abc.abstractmethod
    async def incr(self, key: str, delta: int = 1, *, ttl: float | None = None) -> int:
        """Add ``delta`` to the integer at ``key`` atomically and return the new value.

        A missing or expired key counts from 0. ``ttl`` applies only when the
        increment creates the key, so a window counter expires ``ttl`` seconds
        after its first increment.
        """

    @abc.abstractmethod
    async def ttl(self, key: str) -> float | None:
        """Seconds ``key`` has left to live, fractions kept; ``math.inf`` if it never expires.

        None if the key is absent or expired: the same None :meth:`get` gives.
        """

    @abc.abstractmethod
    async def get_many(self, keys: Iterable[str]) -> dict[str, JSONValue]:
        """The live keys among ``keys``, with their values, in one round trip.

        A key that is absent or expired is left out of the dict, so a key that
        holds JSON ``null`` (in it, as None) is told apart from a missing one.
        On Redis Cluster the keys are read one slot at a time, concurrently.
        """

    @abc.abstractmethod
    async def set_many(self, mapping: Mapping[str, JSONValue], ttl: float | None = None) -> None:
        """:meth:`set` every key of ``mapping``, each with ``ttl``, in one round trip.

        Every value is checked before anything is written, so a value that
        is not JSON stores nothing. The writes are one atomic step on every
        backend but Redis Cluster, where they are one per slot.
        """

    @abc.abstractmethod
    def scan(self, prefix: str = "", *, batch: int = SCAN_BATCH) -> AsyncIterator[str]:
        """Yield every live key that starts with ``prefix``, reading ``batch`` keys at a time.

        ``async for key in store.scan("user:")``. Each round trip does a
        bounded amount of work and nothing is held between them, so a scan
        of millions of keys never stalls the store, and leaving the loop
        early leaves nothing behind. A key that lives through the whole scan
        is yielded; one written or deleted meanwhile may or may not be. The
        order is the keys' on SQLite, PostgreSQL and memory (a snapshot
        there), none on Redis, where a key may also come twice if the server
        resizes its table during the scan (``SCAN``'s own promise; Redis
        Cluster scans every master).
        """

    async def clear(self, prefix: str = "") -> int:
        """Delete every key that starts with ``prefix`` (every key, for ""); return how many lived.

        It deletes ``batch`` keys at a time, as :meth:`scan` reads them, so
        that clearing a big namespace never holds the store for long. Locks
        are not keys, and stay. This default deletes one key at a time;
        the backends delete a batch per round trip.
        """
        cleared = 0
        keys: list[str] = []
        async for key in self.scan(prefix):
            keys.append(key)
            if len(keys) >= SCAN_BATCH:
                cleared += sum([await self.delete(each) for each in keys])
                keys.clear()
        return cleared + sum([await self.delete(each) for each in keys])

    @abc.abstractmethod
    def lock(
        self, name: str, timeout: float = 5.0, *, wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[Lease]:
        """Hold the lock ``name`` for everyone who shares this store.

        ``async with store.lock(name) as lease`` gives the holder a
        :class:`Lease` whose :attr:`~Lease.token` fences its writes (see
        :meth:`set_fenced`); ``async with store.lock(name)`` alone works too.

        Args:
            name: the lock's name; locks and keys live in separate namespaces.
            timeout: the lease in seconds. A holder that dies (or hangs) keeps
                the lock at most this long, so nobody waits for it forever.
            wait: how long to wait to acquire it; defaults to ``timeout``.

        Raises:
            LockTimeout: the lock was not acquired within ``wait`` seconds.
        """

    def lease(
        self, name: str, timeout: float = 5.0, *, wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[Lease]:
        """The lock ``name`` as :meth:`lock` takes it, with a :class:`Lease` to renew.

        For work that may outlast ``timeout``: the holder calls
        ``await lease.renew()`` now and then, and keeps the lock as long as it
        lives, while a holder that dies still frees it within ``timeout``::

            async with store.lease("report", timeout=10, wait=0) as held:
                ...                   # every few seconds: await held.renew()

        This default suits a lock without a lease (``memory://``); backends
        whose locks have one (:class:`~qapp.store.backends.base.SharedStore`) renew it
        in the store, by the holder's token.

        Raises:
            LockTimeout: the lock was not acquired within ``wait`` seconds.
        """
        return self._lease_of_lock(name, timeout, wait)

    @contextlib.asynccontextmanager
    async def _lease_of_lock(
        self, name: str, lease: float, wait: float | None
    ) -> AsyncIterator[Lease]:
        async with self.lock(name, lease, wait=wait) as held:
            yield held

    async def set_fenced(
        self, key: str, value: JSONValue, lease: Lease, ttl: float | None = None
    ) -> None:
        """:meth:`set`, done only while ``lease`` still holds its lock.

        The check and the write are one atomic step in the store, so a holder
        whose lease ran out while it was paused cannot overwrite what the
        next holder wrote, however late it wakes up. The store keeps nothing
        per lock name for this: the lock's entry records its holder, and a
        newer holder can exist only once that entry is gone. ``lease.set(key, value)``
        says the same. On Redis Cluster the key and the lock's name must
        share a slot: name them ``{tag}…`` with one tag (see
        :mod:`qapp.store.backends.redis_cluster`).

        Raises:
            StaleLease: ``lease``'s lock was released, its lease ran out, or a
                newer holder took it.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot fence writes")

    def listen(self, name: str) -> contextlib.AbstractAsyncContextManager[Wakeup]:
        """Listen for :meth:`notify` of ``name`` while inside the ``with`` block.

        A notification carries nothing and is not kept: listen first, then
        check the state you wait for, then wait, and a change made after the
        check cannot be missed::

            async with store.listen("report") as wakeup:
                while await store.get("report") is None:
                    await wakeup.wait(1.0)

        By default a listener hears the notifications of its own process only
        (every sharer of ``memory://``); Redis carries them to every worker of
        every host. :attr:`Wakeup.pushes` says which, so that a waiter on a
        store without them polls.
        """
        return self._listen_here(name)

    @contextlib.asynccontextmanager
    async def _listen_here(self, name: str) -> AsyncIterator[Wakeup]:
        event = asyncio.Event()
        listeners = self._listeners.setdefault(name, set())
        listeners.add(event)
        try:
            yield Wakeup(event, lambda: self.scope == "process")
        finally:
            listeners.discard(event)
            if not listeners and self._listeners.get(name) is listeners:
                del self._listeners[name]

    async def notify(self, name: str) -> None:
        """Wake every listener of ``name`` (see :meth:`listen`); nothing is stored."""
        for event in self._listeners.get(name, ()):
            event.set()

    def namespace(self, name: str) -> Store:
        """A view of this store whose keys and locks live under ``name``.

        ``store.namespace("cache").get("k")`` reads the key ``cache:k``: two
        namespaces never see each other's keys, and views nest
        (``store.namespace("session").namespace("counter")``). A view shares
        its store's connection; closing the view leaves the store open.
        On ``memory://`` each top-level namespace is also bounded on its own,
        so a flood of one kind of entry never evicts another kind.
        """
        return Namespace(self, check_namespace(name))


#: What a namespace's name may look like: no ``:``, which separates it from the key.
NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_namespace(name: str) -> str:
    """Return ``name`` if it can name a namespace: letters, digits, ``_ . -``."""
    if not isinstance(name, str) or not NAMESPACE_PATTERN.fullmatch(name):
        raise ValueError(f"a namespace is 1 to 64 of A-Z a-z 0-9 _ . -, not {name!r}")
    return name


def check_batch(batch: int) -> int:
    """Return ``batch`` if it is a whole number of keys from 1 to :data:`MAX_SCAN_BATCH`."""
    if isinstance(batch, bool) or not isinstance(batch, int):
        raise TypeError(f"batch must be a whole number of keys, not {type(batch).__name__}")
    if not 1 <= batch <= MAX_SCAN_BATCH:
        raise ValueError(f"batch must be 1 to {MAX_SCAN_BATCH} keys, not {batch}")
    return batch


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a string (the empty one matches every key)."""
    if not isinstance(prefix, str):
        raise TypeError(f"a prefix is a string, not {type(prefix).__name__}")
    return prefix


class Namespace(Store):
    """Keys and locks of ``store`` under one prefix: see :meth:`Store.namespace`."""

    def __init__(self, store: Store, name: str) -> None:
        super().__init__(store.url)
        self.store = store
        self.prefix = f"{name}:"
        self.scheme = store.scheme
        self.scope = store.scope

    @property
    def name(self) -> str:
        return self.store.name

    def namespace(self, name: str) -> Store:
        return Namespace(self.store, self.prefix + check_namespace(name))

    async def connect(self) -> None:
        await self.store.connect()

    async def close(self) -> None:
        """Nothing: the store the view belongs to owns the connection."""

    async def ping(self) -> None:
        await self.store.ping()

    async def get(self, key: str) -> JSONValue:
        return await self.store.get(self.prefix + key)

    async def set(self, key: str, value: JSONValue, ttl: float | None = None) -> None:
        await self.store.set(self.prefix + key, value, ttl)

    async def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        return await self.store.add(self.prefix + key, value, ttl)

    async def delete(self, key: str) -> bool:
        return await self.store.delete(self.prefix + key)

    async def expire(self, key: str, ttl: float | None) -> bool:
        return await self.store.expire(self.prefix + key, ttl)

    async def incr(self, key: str, delta: int = 1, *, ttl: float | None = None) -> int:
        return await self.store.incr(self.prefix + key, delta, ttl=ttl)

    async def ttl(self, key: str) -> float | None:
        return await self.store.ttl(self.prefix + key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, JSONValue]:
        found = await self.store.get_many([self.prefix + key for key in keys])
        cut = len(self.prefix)
        return {key[cut:]: value for key, value in found.items()}

    async def set_many(self, mapping: Mapping[str, JSONValue], ttl: float | None = None) -> None:
        await self.store.set_many({self.prefix + key: value for key, value in mapping.items()}, ttl)

    async def scan(self, prefix: str = "", *, batch: int = SCAN_BATCH) -> AsyncIterator[str]:
        cut = len(self.prefix)
        async for key in self.store.scan(self.prefix + check_prefix(prefix), batch=batch):
            yield key[cut:]

    async def clear(self, prefix: str = "") -> int:
        return await self.store.clear(self.prefix + check_prefix(prefix))

    def lock(
        self, name: str, timeout: float = 5.0, *, wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[Lease]:
        return self._viewed(self.store.lock(self.prefix + name, timeout, wait=wait))

    def lease(
        self, name: str, timeout: float = 5.0, *, wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[Lease]:
        return self._viewed(self.store.lease(self.prefix + name, timeout, wait=wait))

    @contextlib.asynccontextmanager
    async def _viewed(
        self, held: contextlib.AbstractAsyncContextManager[Lease]
    ) -> AsyncIterator[Lease]:
        # lease.set(key) then writes this view's key, as the holder expects.
        async with held as lease:
            lease.view = self
            yield lease

    async def set_fenced(
        self, key: str, value: JSONValue, lease: Lease, ttl: float | None = None
    ) -> None:
        await self.store.set_fenced(self.prefix + key, value, lease, ttl)

    def listen(self, name: str) -> contextlib.AbstractAsyncContextManager[Wakeup]:
        return self.store.listen(self.prefix + name)

    async def notify(self, name: str) -> None:
        await self.store.notify(self.prefix + name)
