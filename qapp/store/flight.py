"""``cached``: an expensive async value, computed once by everyone who shares a store.

The store API's answer to the cache stampede. Decorate an async function and
its value is kept in a :class:`~qapp.state.Store`; however many callers ask
at once, on however many workers and hosts share the store, one of them
computes it and the others get what it computed::

    store = await open_store("redis://redis.internal:6379/0")

    @cached(store, ttl=60, stale=30)
    async def report(day: str) -> dict[str, int]:
        ...                                         # seconds of work

    await report("2024-05-01")                      # the value
    info = await report.get_with_info("2024-05-01") # value, cached, stale, computations
    await report.invalidate("2024-05-01")           # the next call computes afresh

(In a Quart app, :meth:`qapp.ext.Qapp.cached` finds the app's store itself.)

It promises (docs/state.md says each in full): keys made of the function's
name and its JSON arguments (:mod:`~qapp.store.callkey`; nothing is
pickled); one computation at a time across every sharer of the store, the
computer's lease renewed while it works (:mod:`~qapp.store.inflight` joins
the callers of one worker); ``stale`` seconds after ``ttl`` during which the
old value is answered at once while one caller recomputes; early refresh
at random before expiry (XFetch, Vattani et al., VLDB 2015; ``beta=0``
turns it off); failures never cached; computations counted in the store.
An in-flight computation is not stopped by :meth:`Cached.invalidate`, and
freshness is judged by each host's wall clock.

Keys, in the namespace given (``cached`` by default) of the store:
``v:<key>`` the entry, ``n:<key>`` the count of computations (kept as long as
the entry: ``ttl + stale`` after the last computation); the lock and the
notifications are named ``<key>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, ParamSpec, TypeVar, Unpack

from qapp.store.cacheapi import BoundCached, CacheOptions, Spawn
from qapp.store.callkey import TAG_PREFIX, CallKey, check_tags, tagged
from qapp.store.codecs import Codec, codec_for
from qapp.store.errors import InvalidValue, LockTimeout, StoreError
from qapp.store.inflight import Entry, Flight, Found, Result, StillComputing, Stopped
from qapp.store.interface import Store, check_namespace
from qapp.store.lease import Lease, Wakeup, keep_renewed
from qapp.store.refresher import Refresher, Slot
from qapp.store.values import check_seconds, dumps, loads

__all__ = [
    "DEFAULT_NAMESPACE",
    "BoundCached",
    "CacheOptions",
    "Cached",
    "Result",
    "Spawn",
    "StillComputing",
    "cached",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: Where entries live unless the decorator names a namespace.
DEFAULT_NAMESPACE = "cached"
#: Seconds of the first poll of a waiter, doubled up to one of the caps below.
FIRST_POLL = 0.005
#: The longest poll of a waiter that no notification can reach (SQLite).
POLL_CAP = 0.1
#: The longest wait of a waiter that notifications reach: only a fallback,
#: for a computer that died or a notification lost while Redis reconnected.
PUSHED_POLL_CAP = 0.5


class Cached(Refresher, Generic[P, T]):
    """An async function whose values are kept in a store, computed once: see the module.

    Call it as the function it decorates; :meth:`get_with_info` says where
    the value came from, :meth:`invalidate` forgets one, :meth:`key` names it.
    """

    def __init__(
        self,
        func: Callable[P, Awaitable[T]],
        store: Store | Callable[[], Store],
        ttl: float = 60.0,
        stale: float = 0.0,
        **options: Unpack[CacheOptions],
    ) -> None:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"cached needs an async function, not {func!r}")
        functools.update_wrapper(self, func)
        self.func = func
        self._store = store if callable(store) else (lambda: store)
        self.ttl = check_seconds("ttl", ttl)
        self.stale = check_seconds("stale", stale, zero=True)
        self.lease = check_seconds("lease", options.get("lease", 10.0))
        self.wait = check_seconds("wait", options.get("wait", 30.0), zero=True)
        self.beta = check_seconds("beta", options.get("beta", 1.0), zero=True)
        self.namespace = check_namespace(options.get("namespace") or DEFAULT_NAMESPACE)
        Refresher.__init__(self, options.get("spawn"))
        self.unless = options.get("unless")
        self._codec_spec = options.get("codec")
        tags = options.get("tags", ())
        self._tags = tags if callable(tags) else check_tags(tags)
        #: The function's module and qualified name: how every key begins.
        self.name = f"{func.__module__}.{func.__qualname__}"
        self._key = CallKey(
            func, self.name, ignore=options.get("ignore", ()), key=options.get("key")
        )
        self._flights: dict[Slot, Flight] = {}

    @functools.cached_property
    def codec(self) -> Codec:
        """How values become JSON and back (:mod:`qapp.store.codecs`); resolved on first use."""
        return codec_for(self._codec_spec, self.func, self.name)

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        """On an instance, a method: the same cache, with the instance as first argument."""
        return self if obj is None else BoundCached(self, obj)

    # -- the public face ---------------------------------------------------------

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key of a call: ``module.qualname:`` and its arguments as canonical JSON.

        Without its tags' tokens, which :meth:`get_with_info` adds (see ``tags``).

        Raises:
            TypeError: the arguments do not fit the function, or are not JSON.
        """
        return self._key(args, kwargs)

    async def _tagged_key(self, store: Store, args: Any, kwargs: Any) -> str:
        """The key of a call, with the current token of each of its tags."""
        tags = check_tags(self._tags(*args, **kwargs)) if callable(self._tags) else self._tags
        return await tagged(store, self._key(args, kwargs), tags)

    async def invalidate_tag(self, tag: str) -> None:
        """Forget every value of this function that was cached with ``tag``.

        The tag gets a new random token, part of the key of every call that
        carries it, so the values kept under the old token are never read
        again and expire in their time. The token lives as long as those
        values may (``ttl + stale``), so no key is kept for ever, and a new
        token never repeats an old one.
        """
        (tag,) = check_tags([tag])
        await self.store().set(TAG_PREFIX + tag, secrets.token_hex(16), ttl=self.ttl + self.stale)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        """The value for these arguments: kept, or computed by one caller of all."""
        return (await self.get_with_info(*args, **kwargs)).value

    async def get_with_info(self, *args: P.args, **kwargs: P.kwargs) -> Result[T]:
        """The value, and whether it was cached, whether it is stale, and its computation.

        Raises:
            TypeError: the arguments are not JSON.
            InvalidValue: the function returned something that is not JSON.
            StillComputing: another worker computed for longer than ``wait``.
            StoreUnavailable: the store cannot be reached.
            Exception: whatever the function raised, when this call had to
                compute and no value was kept.
        """
        store = self.store()
        key = await self._tagged_key(store, args, kwargs)
        call = functools.partial(self.func, *args, **kwargs)
        slot = self._slot(store, key)
        while True:
            flight = self._flights.get(slot)
            if flight is None or flight.stopping:
                flight = Flight(asyncio.ensure_future(self._lookup(store, key, call)))
                self._flights[slot] = flight
                flight.task.add_done_callback(functools.partial(self._landed, slot, flight))
            try:
                found = await flight.join()
            except Stopped:
                continue  # it was stopped as we joined: start another
            break
        value: T = self.codec.decode(loads(found.text))
        return Result(value, found.cached, found.stale, found.computations)

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> Result[T]:
        """Compute the value of these arguments now, fresh, and keep it.

        Still one computation at a time across every sharer of the store: a
        caller that finds another computing waits for that newer value.
        """
        store = self.store()
        key = await self._tagged_key(store, args, kwargs)
        call = functools.partial(self.func, *args, **kwargs)
        found = await self._settle(store, key, call, seen=await self._read(store, key))
        value: T = self.codec.decode(loads(found.text))
        return Result(value, found.cached, found.stale, found.computations)

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Forget the value of these arguments; True if one was kept."""
        store = self.store()
        return await store.delete("v:" + await self._tagged_key(store, args, kwargs))

    async def clear(self) -> int:
        """Forget every value of this function, on every host; return how many were kept.

        A bounded, batched delete of its keys (:meth:`~qapp.state.Store.clear`;
        on Redis Cluster, on every master). ``store.namespace("cached").clear()``
        forgets every function's values in a namespace at once.
        """
        store = self.store()
        values = await store.clear(f"v:{self.name}:")
        await store.clear(f"n:{self.name}:")
        return values

    async def computations(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """How many times the value of these arguments has been computed, by everyone."""
        store = self.store()
        count = await store.get("n:" + await self._tagged_key(store, args, kwargs))
        return count if isinstance(count, int) and not isinstance(count, bool) else 0

    def store(self) -> Store:
        """The namespace of the store where this function's values live."""
        return self._store().namespace(self.namespace)

    # -- one lookup ----------------------------------------------------------------

    def _landed(self, slot: Slot, flight: Flight, task: asyncio.Future[Found]) -> None:
        if self._flights.get(slot) is flight:
            del self._flights[slot]
        if not task.cancelled():
            # Read, so that an error nobody waited for is not reported as lost.
            task.exception()

    async def _lookup(self, store: Store, key: str, call: Callable[[], Awaitable[T]]) -> Found:
        entry = await self._read(store, key)
        now = time.time()
        if entry is not None and now < entry.fresh_until + self.stale:
            stale = now >= entry.fresh_until
            if stale or self._early(entry, now):
                self._refresh_soon(store, key, call, entry)
            return Found.of(entry, cached=True, stale=stale)
        return await self._settle(store, key, call, seen=None)

    @staticmethod
    async def _read(store: Store, key: str) -> Entry | None:
        return Entry.parse(await store.get("v:" + key))

    def _usable(self, entry: Entry | None, seen: Entry | None) -> Found | None:
        """What a waiter was waiting for, if ``entry`` is it.

        Without ``seen`` (a miss), any value not past its stale time; with it
        (a refresh), a value computed after ``seen``.
        """
        if entry is None:
            return None
        if seen is not None:
            if entry.fresh_until <= seen.fresh_until:
                return None
            return Found.of(entry, cached=True, stale=False)
        now = time.time()
        if now >= entry.fresh_until + self.stale:
            return None
        return Found.of(entry, cached=True, stale=now >= entry.fresh_until)

    async def _settle(
        self, store: Store, key: str, call: Callable[[], Awaitable[T]], seen: Entry | None
    ) -> Found:
        """Compute the value under the key's lock, or wait for whoever holds it to."""
        deadline = time.monotonic() + self.wait
        delay = FIRST_POLL
        async with contextlib.AsyncExitStack() as listening:
            wakeup: Wakeup | None = None
            while True:
                async with contextlib.AsyncExitStack() as holding:
                    try:
                        held = await holding.enter_async_context(
                            store.lease(key, timeout=self.lease, wait=0)
                        )
                    except LockTimeout:
                        pass  # someone computes; wait for the value below
                    else:
                        # It may have landed between our look and our lock.
                        found = self._usable(await self._read(store, key), seen)
                        if found is not None:
                            return found
                        return await self._compute(store, key, call, held)
                if wakeup is None:
                    # Listen, then look again: a value that lands after this
                    # look wakes us, one that landed before it is found now.
                    wakeup = await listening.enter_async_context(store.listen(key))
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise StillComputing(
                            f"{key!r} was still being computed after {self.wait:g}s"
                        )
                    # Jittered: the waiters of many workers must not poll in step.
                    await wakeup.wait(min(remaining, delay * random.uniform(0.5, 1.5)))
                    delay = min(delay * 2, PUSHED_POLL_CAP if wakeup.pushes else POLL_CAP)
                found = self._usable(await self._read(store, key), seen)
                if found is not None:
                    return found

    async def _compute(
        self, store: Store, key: str, call: Callable[[], Awaitable[T]], held: Lease
    ) -> Found:
        """Compute, count and store the value of ``key``; the caller holds its lock."""
        stop = asyncio.Event()
        renewing = asyncio.ensure_future(keep_renewed(held, stop, key))
        started = time.monotonic()
        try:
            value = await call()
            try:
                text = dumps(self.codec.encode(value))
            except InvalidValue as exc:
                raise InvalidValue(f"{self.name} returned a value that is not JSON: {exc}") from exc
            delta = time.monotonic() - started
            # The count lives as long as the entry (it is renewed after the
            # entry is written, so it never goes first): each key costs
            # nothing once its value is gone.
            life = self.ttl + self.stale
            count = await store.incr("n:" + key, ttl=life)
            if self.unless is None or not self.unless(value):
                entry = Entry(loads(text), time.time() + self.ttl, delta, count)
                await store.set("v:" + key, entry.as_json(), ttl=life)
            await store.expire("n:" + key, life)
            return Found(text, cached=False, stale=False, computations=count)
        finally:
            stop.set()
            await renewing
            # Waiters look again now: at the value, or, if the work failed, at
            # a free lock that one of them takes.
            try:
                await store.notify(key)
            except StoreError as exc:
                log.debug("waiters of %r not notified (they poll): %s", key, exc)


def cached(
    store: Store | Callable[[], Store],
    ttl: float = 60.0,
    stale: float = 0.0,
    **options: Unpack[CacheOptions],
) -> Callable[[Callable[P, Awaitable[T]]], Cached[P, T]]:
    """Keep an async function's values in ``store``, each computed once: see the module.

    Args:
        store: the store, or a function that returns it when a call needs it.
        ttl: seconds a value is fresh.
        stale: seconds after that during which it is still answered, at once
            and marked stale, while one caller recomputes it in the background.
        **options: see :class:`~qapp.store.cacheapi.CacheOptions`, below.

    Options:

    - ``lease``: seconds of the computing caller's lock, renewed while it
      works; what a computer that dies costs its waiters at most (10).
    - ``wait``: seconds a caller waits for another's computation before
      :class:`StillComputing` (30).
    - ``beta``: XFetch's eagerness to refresh before expiry; 0 turns it off (1).
    - ``namespace``: the store namespace of the entries (``cached``).
    - ``spawn``: how to start a background refresh (default: an asyncio task).
    - ``key``: a function of the call's arguments that returns the key's
      argument part, a string, in place of the arguments' JSON.
    - ``ignore``: names of arguments left out of the key (``self``, a pool).
    - ``unless``: a predicate on a computed value: true, and it is not kept.
    - ``tags``: names that :meth:`Cached.invalidate_tag` forgets at once, or a
      function of the call's arguments that gives them.
    - ``codec``: how values become JSON: ``"json"`` (the default: JSON values
      that come back equal), ``"typed"`` (the declared return type, exactly)
      or a :class:`~qapp.store.codecs.Codec`.
    """

    def decorate(func: Callable[P, Awaitable[T]]) -> Cached[P, T]:
        return Cached(func, store, ttl, stale, **options)

    return decorate
