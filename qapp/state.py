"""The store API: one async key-value Store, a home for state at every scale.

This module is the front door of qapp's state library. It needs no web
framework (``import qapp.state`` loads no Quart) and works in any asyncio
program::

    store = await open_store("sqlite:///var/qapp.db")
    await store.incr("hits")                       # atomic for every sharer
    cache = store.namespace("cache")               # keys cannot collide

A store is chosen by URL and keeps the same promises on every backend, each
in its own module under :mod:`qapp.backends`, imported only when its URL is
used (so ``memory://`` never imports a driver):

=================  ================================  ======================================
URL                backend                           who shares the data
=================  ================================  ======================================
memory://          ``qapp.backends.memory``          the coroutines of this process only
sqlite:///p        ``qapp.backends.sqlite``          every worker process on this host
redis://h/0        ``qapp.backends.redis``           every worker on every host
redis+sentinel://  ``qapp.backends.redis_sentinel``  every host; Sentinel fails over
redis+cluster://   ``qapp.backends.redis_cluster``   every host; keys sharded over masters
postgresql://      ``qapp.backends.postgres``        every worker on every host
=================  ================================  ======================================

A new backend is one module with a :class:`Store` subclass and one line in
:data:`BACKENDS`.

Values are JSON and nothing is ever pickled. ``ttl`` is a number of seconds
(fractions allowed) everywhere, and an expired key is never returned.
``incr`` and ``add`` are atomic for everyone sharing the store, and ``lock``
gives mutual exclusion to the same set of sharers; ``lease`` is the same lock
with a handle to renew its lease while long work runs. ``notify`` wakes the
sharers that ``listen`` for a name, so that a waiter need not poll.

Every lock a holder takes comes with a *fencing token*, strictly increasing
per lock name, and :meth:`Store.set_fenced` (or ``lease.set``) writes only
while no newer token has been issued: a holder that was paused past its
lease (a GC pause, SIGSTOP) cannot overwrite what the next holder wrote::

    async with store.lock("report", timeout=5) as lease:
        await lease.set("report", build())    # StaleLease if superseded

Errors are the project's own; a driver's exception is kept as ``__cause__``::

    QappError
    ├── ConfigurationError      bad or unknown store URL, raised at startup
    └── StoreError
        ├── StoreUnavailable    the backend cannot be reached now (HTTP 503)
        ├── LockTimeout         a lock was not acquired within its wait
        ├── StaleLease          a fenced write of a holder that was superseded
        └── InvalidValue        not JSON, or ``incr`` on a non-integer

A missing key is ``None``, never an exception.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import importlib
import json
import logging
import math
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

from qapp.lease import Lease, Wakeup

__all__ = [
    "BACKENDS",
    "ConfigurationError",
    "InvalidValue",
    "JSONValue",
    "Lease",
    "LockTimeout",
    "QappError",
    "Scope",
    "StaleLease",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Wakeup",
    "open_store",
    "redact",
    "store_from_url",
]

log = logging.getLogger(__name__)

#: Any value that survives ``json.dumps``. Spelled ``Any`` so that callers'
#: precise types (``dict[str, int]``) pass without casts; the store checks at
#: run time instead. ``get`` returns it too, with None for a missing key.
JSONValue: TypeAlias = Any

#: Who sees a store's data: one process, one host, or every host.
Scope: TypeAlias = Literal["process", "host", "cluster"]


class QappError(Exception):
    """Base of every error qapp raises on purpose."""


class ConfigurationError(QappError):
    """The configuration cannot work, e.g. a store URL with an unknown scheme."""


class StoreError(QappError):
    """Base of the errors a store raises."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now; the caller may retry later."""


class LockTimeout(StoreError):
    """A lock was not acquired within the time the caller was willing to wait."""


class StaleLease(StoreError):
    """A write fenced by a lock was refused: a newer holder of that lock has been issued a token.

    The holder's lease ran out (it was paused, or too slow) and someone else
    took the lock; what it meant to write would overwrite the newer holder's.
    """


class InvalidValue(StoreError, ValueError):
    """A value that is not JSON, or an increment of a value that is not an integer."""


def dumps(value: JSONValue) -> str:
    """Encode ``value`` as compact JSON, refusing anything JSON cannot hold."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        # A lone surrogate ("\ud800") passes json.dumps but is no UTF-8: SQLite
        # and Redis failed on it (as a 503 and a 500) while memory kept it.
        # Refused here, every backend refuses it alike.
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidValue(f"value is not JSON: {exc}") from exc
    return text


def loads(raw: str | bytes) -> JSONValue:
    """Decode a value written by :func:`dumps`."""
    return json.loads(raw)


def check_ttl(ttl: float | None) -> float | None:
    """Return ``ttl`` if it is a positive, finite number of seconds (or None)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
    return float(ttl)


def lease_and_wait(timeout: float, wait: float | None) -> tuple[float, float]:
    """A lock's lease (``timeout``, checked) and how long to wait for it (``wait`` or the lease)."""
    lease = check_ttl(timeout)
    if lease is None:
        raise ValueError("a lock needs a lease")
    return lease, lease if wait is None else wait


def check_delta(delta: int) -> int:
    """Return ``delta`` if it is a plain integer."""
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise TypeError(f"delta must be an int, not {type(delta).__name__}")
    return delta


class Store(abc.ABC):
    """An async key-value store of JSON values with TTLs, atomic counters and locks.

    Use it as an async context manager (enter connects, exit closes), or call
    :meth:`connect` and :meth:`close` yourself. Every backend connects lazily
    too, so a store whose server is down at startup starts working as soon
    as the server is back.
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
        whose locks have one (:class:`~qapp.backends.base.SharedStore`) renew it
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
        """:meth:`set`, done only if no newer token than ``lease``'s has been issued for its lock.

        The check and the write are one atomic step in the store, so a holder
        whose lease ran out while it was paused cannot overwrite what the
        next holder wrote, however late it wakes up. ``lease.set(key, value)``
        says the same. On Redis Cluster the key and the lock's name must
        share a slot: name them ``{tag}…`` with one tag (see
        :mod:`qapp.backends.redis_cluster`).

        Raises:
            StaleLease: a newer token has been issued for ``lease``'s lock.
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
        # Imported here: the view is a Store, so its module imports this one.
        from qapp.namespace import Namespace, check_namespace

        return Namespace(self, check_namespace(name))


# --- choosing a backend by URL ---------------------------------------------

#: scheme -> "module:Class", imported only when used so that memory:// never
#: imports a driver.
BACKENDS: dict[str, str] = {
    "memory": "qapp.backends.memory:MemoryStore",
    "sqlite": "qapp.backends.sqlite:SQLiteStore",
    "redis": "qapp.backends.redis:RedisStore",
    "rediss": "qapp.backends.redis:RedisStore",
    "unix": "qapp.backends.redis:RedisStore",
    "redis+sentinel": "qapp.backends.redis_sentinel:SentinelStore",
    "rediss+sentinel": "qapp.backends.redis_sentinel:SentinelStore",
    "redis+cluster": "qapp.backends.redis_cluster:ClusterStore",
    "rediss+cluster": "qapp.backends.redis_cluster:ClusterStore",
    "postgresql": "qapp.backends.postgres:PostgresStore",
    "postgres": "qapp.backends.postgres:PostgresStore",
}


def redact(url: str) -> str:
    """``url`` with any password replaced, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def store_from_url(url: str) -> Store:
    """Build (but do not connect) the store for ``url``.

    Raises:
        ConfigurationError: the URL is malformed or names no known backend, or
            the backend's driver is not installed (:class:`~qapp.extras.MissingExtra`).
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"store URL must look like scheme://..., got {url!r}")
    scheme = urlsplit(url).scheme.lower()
    target = BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in BACKENDS)
        raise ConfigurationError(
            f"unknown store scheme {scheme!r} in {redact(url)!r}; known: {known}"
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # The backend's driver comes with an extra (qapp[redis], qapp[postgres]).
        from qapp.extras import MissingExtra, extra_of

        extra = extra_of(exc.name)
        if extra is None:
            raise
        raise MissingExtra(f"the {scheme}:// store", extra) from None
    cls: type[Store] = getattr(module, class_name)
    return cls(url)


async def open_store(url: str) -> Store:
    """Build the store for ``url`` and connect it.

    Raises:
        ConfigurationError: the URL is malformed or names no known backend.
        StoreUnavailable: the store cannot be reached.
    """
    store = store_from_url(url)
    try:
        await store.connect()
    except BaseException:
        await store.close()
        raise
    return store
