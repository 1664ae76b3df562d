"""Choosing a backend by URL: each backend's module is imported only when its URL is used.

So ``memory://`` and ``sqlite://`` never import a driver, and a driver that
is not installed matters only to the URLs that need it.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from qapp.store.errors import ConfigurationError
from qapp.store.extras import MissingExtra, extra_of
from qapp.store.interface import Store

__all__ = ["BACKENDS", "open_store", "redact", "store_from_url"]

#: scheme -> "module:Class", imported only when used so that memory:// never
#: imports a driver.
BACKENDS: dict[str, str] = {
    "memory": "qapp.store.backends.memory:MemoryStore",
    "sqlite": "qapp.store.backends.sqlite:SQLiteStore",
    "redis": "qapp.store.backends.redis:RedisStore",
    "rediss": "qapp.store.backends.redis:RedisStore",
    "unix": "qapp.store.backends.redis:RedisStore",
    "redis+sentinel": "qapp.store.backends.redis_sentinel:SentinelStore",
    "rediss+sentinel": "qapp.store.backends.redis_sentinel:SentinelStore",
    "redis+cluster": "qapp.store.backends.redis_cluster:ClusterStore",
    "rediss+cluster": "qapp.store.backends.redis_cluster:ClusterStore",
    "postgresql": "qapp.store.backends.postgres:PostgresStore",
    "postgres": "qapp.store.backends.postgres:PostgresStore",
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
            the backend's driver is not installed (:class:`~qapp.store.extras.MissingExtra`).
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
