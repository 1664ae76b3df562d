"""The memory store: state of one worker process, bounded, gone when it exits.

Right for tests and one-process tools. Under several workers each has its
own copy, which is why ``/health`` and the startup log warn about it.

Entries are kept per top-level namespace (see :meth:`Store.namespace`), each
bounded on its own: past ``max_entries`` (``memory://?max_entries=N``,
10,000 by default) the oldest entry *of that namespace* is evicted. A
flood of anonymous sessions therefore evicts old sessions, never the user
accounts kept beside them. Keys outside every
namespace share one more bucket with the same bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from urllib.parse import parse_qs, urlsplit

from qapp.store.errors import ConfigurationError, InvalidValue, LockTimeout, StaleLease
from qapp.store.interface import SCAN_BATCH, Store, check_batch, check_prefix
from qapp.store.lease import Lease
from qapp.store.values import JSONValue, check_delta, check_ttl, dumps, lease_and_wait, loads

__all__ = ["MemoryStore"]

#: Entries kept per namespace unless the URL says otherwise (``memory://?max_entries=N``).
DEFAULT_MAX_ENTRIES = 10_000

#: key -> (JSON text, expiry on the monotonic clock or None).
Bucket = OrderedDict[str, tuple[str, float | None]]


def _max_entries(url: str) -> int:
    query = parse_qs(urlsplit(url).query)
    raw = query.get("max_entries", [str(DEFAULT_MAX_ENTRIES)])[-1]
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"max_entries must be a whole number, not {raw!r}") from None


class MemoryStore(Store):
    """A bounded in-process store; see the module docstring."""

    scheme = "memory"
    scope = "process"

    def __init__(self, url: str = "memory://", max_entries: int | None = None) -> None:
        super().__init__(url)
        if max_entries is None:
            max_entries = _max_entries(url)
        if max_entries < 1:
            raise ConfigurationError("max_entries must be at least 1")
        self.max_entries = max_entries
        # Namespace name ("" for keys outside every namespace) -> its entries.
        # Values are kept encoded so that a caller mutating a returned dict
        # changes nothing.
        self.buckets: dict[str, Bucket] = {"": OrderedDict()}
        # name -> (lock, holders and waiters)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        # The last fencing token issued, for any name: one counter for the whole
        # store, so tokens rise per name without an entry kept per name.
        self._fence = 0
        # name -> the token of its holder, only while the lock is held.
        self._holders: dict[str, int] = {}

    def namespace(self, name: str) -> Store:
        view = super().namespace(name)
        if name not in self.buckets:
            # Keys written under this prefix before the namespace existed move
            # into its bucket, so that a key is found wherever it was written.
            prefix, root = f"{name}:", self.buckets[""]
            moved = [key for key in root if key.startswith(prefix)]
            self.buckets[name] = OrderedDict((key, root.pop(key)) for key in moved)
        return view

    def _bucket(self, key: str) -> Bucket:
        # Only namespaces made with namespace() get a bucket: keys chosen by
        # clients must not be able to create buckets (and so grow the store).
        head, sep, _ = key.partition(":")
        bucket = self.buckets.get(head) if sep else None
        return self.buckets[""] if bucket is None else bucket

    @staticmethod
    def _now() -> float:
        # Monotonic: a wall-clock step must not expire or revive entries.
        return time.monotonic()

    def _live(self, key: str) -> str | None:
        bucket = self._bucket(key)
        item = bucket.get(key)
        if item is None:
            return None
        raw, expires = item
        if expires is not None and expires <= self._now():
            del bucket[key]
            return None
        return raw

    def _put(self, key: str, raw: str, ttl: float | None) -> None:
        bucket = self._bucket(key)
        bucket[key] = (raw, None if ttl is None else self._now() + ttl)
        bucket.move_to_end(key)
        while len(bucket) > self.max_entries:
            bucket.popitem(last=False)

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
        self._bucket(key).pop(key, None)
        return found

    async def expire(self, key: str, ttl: float | None) -> bool:
        ttl = check_ttl(ttl)
        raw = self._live(key)
        if raw is None:
            return False
        self._bucket(key)[key] = (raw, None if ttl is None else self._now() + ttl)
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
        bucket = self._bucket(key)
        bucket[key] = (str(value), bucket[key][1])
        return value

    async def ttl(self, key: str) -> float | None:
        if self._live(key) is None:
            return None
        expires = self._bucket(key)[key][1]
        return math.inf if expires is None else expires - self._now()

    async def get_many(self, keys: Iterable[str]) -> dict[str, JSONValue]:
        found = {key: self._live(key) for key in keys}
        return {key: loads(raw) for key, raw in found.items() if raw is not None}

    async def set_many(self, mapping: Mapping[str, JSONValue], ttl: float | None = None) -> None:
        # Every value encoded before the first is written: all or nothing.
        encoded, ttl = {key: dumps(value) for key, value in mapping.items()}, check_ttl(ttl)
        for key, raw in encoded.items():
            self._put(key, raw, ttl)

    async def scan(self, prefix: str = "", *, batch: int = SCAN_BATCH) -> AsyncIterator[str]:
        prefix, _ = check_prefix(prefix), check_batch(batch)
        # A snapshot: the loop over the buckets must not see them change.
        keys = sorted(
            key for bucket in self.buckets.values() for key in bucket if key.startswith(prefix)
        )
        for key in keys:
            # Checked as it is yielded: a key that expired or went since is not.
            if self._live(key) is not None:
                yield key

    def lock(
        self, name: str, timeout: float = 5.0, *, wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[Lease]:
        lease, patience = lease_and_wait(timeout, wait)
        return self._local_lock(name, lease, patience)

    async def set_fenced(
        self, key: str, value: JSONValue, lease: Lease, ttl: float | None = None
    ) -> None:
        raw, ttl = dumps(value), check_ttl(ttl)
        # No await between the check and the write: atomic within the loop.
        if self._holders.get(lease.name) != lease.token:
            raise StaleLease(f"lock {lease.name!r} is no longer held by token {lease.token}")
        self._put(key, raw, ttl)

    @contextlib.asynccontextmanager
    async def _local_lock(self, name: str, lease: float, wait: float) -> AsyncIterator[Lease]:
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
            self._fence += 1
            fence = self._holders[name] = self._fence
            held = Lease(name, lease, fence)
            held.view = self
            try:
                yield held
            finally:
                del self._holders[name]
                lock.release()
        finally:
            # Forget a lock nobody holds or waits for, so names cannot pile up.
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)
