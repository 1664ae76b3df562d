"""The options of ``cached`` and its methods bound to an instance (see :mod:`qapp.store.flight`).

Decorate a method, and ``obj.method`` is a :class:`BoundCached`: the same
cache, with the instance passed first. Leave the instance out of the key
with ``ignore=["self"]`` (or key it yourself with ``key=``): it is rarely JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeAlias, TypedDict

from qapp.store.callkey import Tags
from qapp.store.codecs import Codec

__all__ = ["BoundCached", "CacheOptions", "CachedFunction", "Spawn"]

#: Starts a background job: ``spawn(job)`` must arrange for ``await job()``.
Spawn: TypeAlias = Callable[[Callable[[], Awaitable[None]]], object]


class CacheOptions(TypedDict, total=False):
    """The options of ``cached`` after ``ttl`` and ``stale``; :func:`qapp.store.flight.cached`
    says what each does."""

    lease: float
    wait: float
    beta: float
    namespace: str | None
    spawn: Spawn | None
    key: Callable[..., str] | None
    ignore: Iterable[str]
    unless: Callable[[Any], bool] | None
    tags: Tags
    codec: Codec | str | None


class CachedFunction(Protocol):
    """What a :class:`~qapp.store.flight.Cached` offers, as a bound method needs it."""

    async def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    async def get_with_info(self, *args: Any, **kwargs: Any) -> Any: ...
    async def refresh(self, *args: Any, **kwargs: Any) -> Any: ...
    async def invalidate(self, *args: Any, **kwargs: Any) -> bool: ...
    async def computations(self, *args: Any, **kwargs: Any) -> int: ...
    def key(self, *args: Any, **kwargs: Any) -> str: ...
    async def invalidate_tag(self, tag: str) -> None: ...
    async def clear(self) -> int: ...


class BoundCached:
    """A cached method of one instance: each call passes the instance as the first argument."""

    def __init__(self, cached: CachedFunction, obj: object) -> None:
        self.cached = cached
        self.obj = obj

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self.cached(self.obj, *args, **kwargs)

    async def get_with_info(self, *args: Any, **kwargs: Any) -> Any:
        return await self.cached.get_with_info(self.obj, *args, **kwargs)

    async def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return await self.cached.refresh(self.obj, *args, **kwargs)

    async def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        return await self.cached.invalidate(self.obj, *args, **kwargs)

    async def computations(self, *args: Any, **kwargs: Any) -> int:
        return await self.cached.computations(self.obj, *args, **kwargs)

    def key(self, *args: Any, **kwargs: Any) -> str:
        return self.cached.key(self.obj, *args, **kwargs)

    async def invalidate_tag(self, tag: str) -> None:
        await self.cached.invalidate_tag(tag)

    async def clear(self) -> int:
        return await self.cached.clear()
