"""Namespaces: a view of a store whose keys and locks live under one prefix.

``store.namespace("cache")`` (:meth:`qapp.state.Store.namespace`) is the one
home of key prefixes: ``cache.get("k")`` reads ``cache:k``, so two
namespaces never see each other's keys, and views nest. A view shares its
store's connection.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

from qapp.lease import Lease, Wakeup
from qapp.state import JSONValue, Store

__all__ = ["NAMESPACE_PATTERN", "Namespace", "check_namespace"]

#: What a namespace's name may look like: no ``:``, which separates it from the key.
NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_namespace(name: str) -> str:
    """Return ``name`` if it can name a namespace: letters, digits, ``_ . -``."""
    if not isinstance(name, str) or not NAMESPACE_PATTERN.fullmatch(name):
        raise ValueError(f"a namespace is 1 to 64 of A-Z a-z 0-9 _ . -, not {name!r}")
    return name


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
