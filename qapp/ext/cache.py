"""``@qapp.cached(...)``: :mod:`qapp.store.flight`'s ``cached`` on the current app's store.

::

    qapp = Qapp(app)

    @qapp.cached(ttl=60, stale=30)
    async def report(day: str) -> dict[str, int]:
        ...                                      # seconds of work, done once

    @app.get("/report/<day>")
    async def show(day: str):
        info = await report.get_with_info(day)   # or just: await report(day)
        return {"report": info.value, "stale": info.stale}

The decorated function finds its store when it is called, in the app that
is serving: ``qapp.store(store)`` (the ``cache`` store by default), so one
function serves every app and every worker. Blueprints without the Qapp
object use :func:`cached` from this module, which is the same.

A background refresh (of a stale value, or an early one) runs as a Quart
background task: it keeps the app context, and a worker that shuts down waits
for it. A waiter that gives up (:class:`~qapp.store.flight.StillComputing`, a
:class:`~qapp.state.LockTimeout`) is answered 503 with ``Retry-After``, like
every store error.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypedDict, TypeVar, Unpack

from quart import current_app, has_app_context

from qapp.ext.context import get_store
from qapp.store.callkey import Tags
from qapp.store.codecs import Codec
from qapp.store.flight import Cached, Result, StillComputing
from qapp.store.flight import cached as cached_in

__all__ = ["Cached", "Result", "StillComputing", "cached"]

P = ParamSpec("P")
T = TypeVar("T")


class AppCacheOptions(TypedDict, total=False):
    """:class:`~qapp.store.cacheapi.CacheOptions` without ``spawn``: the app's jobs run them."""

    lease: float
    wait: float
    beta: float
    namespace: str | None
    key: Callable[..., str] | None
    ignore: Iterable[str]
    unless: Callable[[Any], bool] | None
    tags: Tags
    codec: Codec | str | None


def cached(
    ttl: float = 60.0,
    stale: float = 0.0,
    *,
    store: str = "cache",
    **options: Unpack[AppCacheOptions],
) -> Callable[[Callable[P, Awaitable[T]]], Cached[P, T]]:
    """Keep an async function's values in the current app's ``store``, each computed once.

    The options are :func:`qapp.store.flight.cached`'s (``lease``, ``wait``,
    ``beta``, ``namespace``, ``key``, ``ignore``, ``unless``, ``tags``, ``codec``), and
    ``store``: the name of the app's store (``cache``: ``QAPP_CACHE_STORE_URL``).
    """
    return cached_in(
        functools.partial(get_store, store), ttl, stale, spawn=in_background, **options
    )


def in_background(job: Callable[[], Awaitable[None]]) -> None:
    """Run ``job`` as a background task of the current app (an asyncio task outside one)."""

    async def run() -> None:
        await job()

    if has_app_context():
        current_app.add_background_task(run)
        return
    task = asyncio.get_running_loop().create_task(run())
    # The loop keeps only a weak reference: hold one until the job is done.
    _outside_apps.add(task)
    task.add_done_callback(_outside_apps.discard)


#: Background jobs started outside any app context.
_outside_apps: set[asyncio.Task[None]] = set()
