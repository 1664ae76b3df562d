"""The state layer: one async key-value Store, three homes for shared state.

A store is chosen by URL and keeps the same promises on every backend:

============  =========================  ==========================================
URL           backend                    who shares the data
============  =========================  ==========================================
memory://     :class:`MemoryStore`       the coroutines of this process only
sqlite:///p   ``qapp.backends.sqlite``   every worker process on this host
redis://h/0   ``qapp.backends.redis``    every worker on every host
============  =========================  ==========================================

Values are JSON and nothing is ever pickled. ``ttl`` is a number of seconds
(fractions allowed) everywhere, and an expired key is never returned.
``incr`` and ``add`` are atomic for everyone sharing the store, and ``lock``
gives mutual exclusion to the same set of sharers.

Errors are the project's own; a driver's exception is kept as ``__cause__``::

    QappError
    ├── ConfigurationError      bad or unknown store URL, raised at startup
    └── StoreError
        ├── StoreUnavailable    the backend cannot be reached now (HTTP 503)
        ├── LockTimeout         a lock was not acquired within its wait
        └── InvalidValue        not JSON, or ``incr`` on a non-integer

A missing key is ``None``, never an exception.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import importlib
import json
import logging
import math
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from quart import Quart

__all__ = [
    "ConfigurationError",
    "InvalidValue",
    "JSONValue",
    "LockTimeout",
    "MemoryStore",
    "QappError",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "get_store",
    "init_app",
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
    scheme: ClassVar[str]
    #: Who sees this store's data.
    scope: ClassVar[Scope]

    def __init__(self, url: str) -> None:
        self.url = url
        # Releases of locks that cancelled waiters took; see _attempt.
        self._giving_back: set[asyncio.Future[None]] = set()

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

    def lock(
        self, name: str, timeout: float = 5.0, *, wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the lock ``name`` for everyone who shares this store.

        Args:
            name: the lock's name; locks and keys live in separate namespaces.
            timeout: the lease in seconds. A holder that dies (or hangs) keeps
                the lock at most this long, so nobody waits for it forever.
            wait: how long to wait to acquire it; defaults to ``timeout``.

        Raises:
            LockTimeout: the lock was not acquired within ``wait`` seconds.
        """
        lease = check_ttl(timeout)
        assert lease is not None, "a lock needs a lease"
        patience = lease if wait is None else wait
        return self._polling_lock(name, lease, patience)

    # Backends shared between processes implement these two and inherit a
    # polling lock; the memory store overrides :meth:`lock` with asyncio's.
    async def _try_acquire(self, name: str, token: str, lease: float) -> bool:
        raise NotImplementedError

    async def _release(self, name: str, token: str) -> None:
        raise NotImplementedError

    async def _attempt(self, name: str, token: str, lease: float) -> bool:
        """One try at the lock that a cancelled waiter cannot leave half done.

        A waiter is cancelled when its client goes away. By then its acquire
        may already be on its way to the store, and may still take the lock
        for nobody: every other waiter would sit out the lease. So the try
        runs to its end regardless, and a lock it took is given back.
        """
        attempt = asyncio.ensure_future(self._try_acquire(name, token, lease))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            attempt.add_done_callback(functools.partial(self._give_back, name, token))
            raise

    def _give_back(self, name: str, token: str, attempt: asyncio.Future[bool]) -> None:
        if attempt.cancelled() or attempt.exception() is not None or not attempt.result():
            return
        release = asyncio.ensure_future(self._release(name, token))
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
                await asyncio.shield(self._release(name, token))
            except StoreError as exc:
                log.warning("lock %r not released (its lease will free it): %s", name, exc)


class MemoryStore(Store):
    """A bounded in-process store: state of one worker, gone when it exits.

    Right for tests and one-process tools. Under several workers each has its
    own copy, which is why ``/health`` and the startup log warn about it.
    The oldest entries are evicted beyond ``max_entries``.
    """

    scheme = "memory"
    scope = "process"

    def __init__(self, url: str = "memory://", max_entries: int = 10_000) -> None:
        super().__init__(url)
        if max_entries < 1:
            raise ConfigurationError("max_entries must be at least 1")
        self.max_entries = max_entries
        # key -> (JSON text, expiry on the monotonic clock or None). Values are
        # kept encoded so that a caller mutating a returned dict changes nothing.
        self._data: OrderedDict[str, tuple[str, float | None]] = OrderedDict()
        # name -> (lock, holders and waiters)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @staticmethod
    def _now() -> float:
        # Monotonic: a wall-clock step must not expire or revive entries.
        return time.monotonic()

    def _live(self, key: str) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        raw, expires = item
        if expires is not None and expires <= self._now():
            del self._data[key]
            return None
        return raw

    def _put(self, key: str, raw: str, ttl: float | None) -> None:
        expires = None if ttl is None else self._now() + ttl
        self._data[key] = (raw, expires)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get(self, key: str) -> JSONValue:
        raw = self._live(key)
        return None if raw is None else loads(raw)

    async def set(self, key: str, value: JSONValue, ttl: float | None = None) -> None:
        self._put(key, dumps(value), check_ttl(ttl))

    async def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        raw, ttl = dumps(value), check_ttl(ttl)
        # No await between the check and the write: atomic within the loop.
        if self._live(key) is not None:
            return False
        self._put(key, raw, ttl)
        return True

    async def delete(self, key: str) -> bool:
        found = self._live(key) is not None
        self._data.pop(key, None)
        return found

    async def expire(self, key: str, ttl: float | None) -> bool:
        ttl = check_ttl(ttl)
        raw = self._live(key)
        if raw is None:
            return False
        self._data[key] = (raw, None if ttl is None else self._now() + ttl)
        return True

    async def incr(self, key: str, delta: int = 1, *, ttl: float | None = None) -> int:
        delta, ttl = check_delta(delta), check_ttl(ttl)
        raw = self._live(key)
        if raw is None:
            self._put(key, str(delta), ttl)
            return delta
        current = loads(raw)
        if isinstance(current, bool) or not isinstance(current, int):
            raise InvalidValue(f"value at {key!r} is not an integer")
        value = current + delta
        self._data[key] = (str(value), self._data[key][1])
        return value

    def lock(
        self, name: str, timeout: float = 5.0, *, wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        lease = check_ttl(timeout)
        assert lease is not None
        return self._local_lock(name, lease if wait is None else wait)

    @contextlib.asynccontextmanager
    async def _local_lock(self, name: str, wait: float) -> AsyncIterator[None]:
        # No lease is needed: a holder cannot die without its process, and with
        # the process the lock is gone too. asyncio.Lock also queues waiters
        # fairly instead of polling.
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancel that lands as the lock is granted. A free lock is taken
                # without suspending, so even wait=0 gets it.
                async with asyncio.timeout(wait):
                    await lock.acquire()
            except TimeoutError:
                raise LockTimeout(f"lock {name!r} not acquired within {wait:g}s") from None
            try:
                yield
            finally:
                lock.release()
        finally:
            # Forget a lock nobody holds or waits for, so names cannot pile up.
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


# --- choosing a backend by URL ---------------------------------------------

#: scheme -> "module:Class", imported only when used so that memory:// never
#: imports a driver.
BACKENDS: dict[str, str] = {
    "memory": "qapp.state:MemoryStore",
    "sqlite": "qapp.backends.sqlite:SQLiteStore",
    "redis": "qapp.backends.redis:RedisStore",
    "rediss": "qapp.backends.redis:RedisStore",
    "unix": "qapp.backends.redis:RedisStore",
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
        ConfigurationError: the URL is malformed or names no known backend.
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
    cls: type[Store] = getattr(importlib.import_module(module_name), class_name)
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


# --- wiring into a Quart app -------------------------------------------------

Role: TypeAlias = Literal["main", "session", "cache"]

#: The config key that names each role's store URL.
ROLE_CONFIG: dict[Role, str] = {
    "main": "STORE_URL",
    "session": "SESSION_STORE_URL",
    "cache": "CACHE_STORE_URL",
}


@dataclass
class AppState:
    """The stores of one app in one worker, kept in ``app.extensions["qapp"]``."""

    stores: dict[Role, Store]

    @property
    def main(self) -> Store:
        return self.stores["main"]


def init_app(app: Quart) -> None:
    """Give ``app`` its stores: built now, connected per worker, closed at shutdown.

    URLs are checked here, so a bad one fails at startup. Roles that share a
    URL share one store (and one connection pool). Connections are made in
    ``before_serving``, inside each worker's own event loop; a store that is
    down then is logged, and the app serves 503s until it comes back.
    """
    by_url: dict[str, Store] = {}
    stores: dict[Role, Store] = {}
    for role, key in ROLE_CONFIG.items():
        url = app.config.get(key) or app.config["STORE_URL"]
        if url not in by_url:
            by_url[url] = store_from_url(url)
        stores[role] = by_url[url]
    app.extensions["qapp"] = AppState(stores)

    @app.before_serving
    async def connect_stores() -> None:
        for url, store in by_url.items():
            if store.scope == "process":
                log.warning(
                    "store %s is process-local: with several workers each has its own "
                    "copy, and 'shared' state is not shared",
                    redact(url),
                )
            try:
                await store.connect()
            except StoreUnavailable as exc:
                log.warning("store %s unavailable at startup (%s); will retry", redact(url), exc)

    @app.after_serving
    async def close_stores() -> None:
        for store in by_url.values():
            await store.close()


def get_store(role: Role = "main", app: Quart | None = None) -> Store:
    """Return the current app's store for ``role`` (main, session or cache)."""
    if app is None:
        from quart import current_app

        app = current_app
    state: AppState = app.extensions["qapp"]
    return state.stores[role]
