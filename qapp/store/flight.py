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
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Generic, ParamSpec, TypeAlias, TypeVar

from qapp.store.callkey import CallKey
from qapp.store.errors import InvalidValue, LockTimeout, StoreError
from qapp.store.inflight import Entry, Flight, Found, Result, StillComputing, Stopped
from qapp.store.interface import Namespace, Store, check_namespace
from qapp.store.lease import Lease, Wakeup
from qapp.store.values import check_seconds, dumps, loads

__all__ = ["DEFAULT_NAMESPACE", "Cached", "Result", "Spawn", "StillComputing", "cached"]

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
#: Seconds after a failed background refresh before this worker tries again.
REFRESH_BACKOFF = 1.0

#: Starts a background job: ``spawn(job)`` must arrange for ``await job()``.
Spawn: TypeAlias = Callable[[Callable[[], Awaitable[None]]], object]


#: Where a flight runs: event loop, store object, namespace prefix and key.
_Slot: TypeAlias = tuple[int, int, str, str]


class Cached(Generic[P, T]):
    """An async function whose values are kept in a store, computed once: see the module.

    Call it as the function it decorates; :meth:`get_with_info` says where
    the value came from, :meth:`invalidate` forgets one, :meth:`key` names it.
    """

    def __init__(
        self,
        func: Callable[P, Awaitable[T]],
        store: Store | Callable[[], Store],
        *,
        ttl: float = 60.0,
        stale: float = 0.0,
        lease: float = 10.0,
        wait: float = 30.0,
        beta: float = 1.0,
        namespace: str | None = None,
        spawn: Spawn | None = None,
    ) -> None:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"cached needs an async function, not {func!r}")
        functools.update_wrapper(self, func)
        self.func = func
        self._store = store if callable(store) else (lambda: store)
        self.ttl = check_seconds("ttl", ttl)
        self.stale = check_seconds("stale", stale, zero=True)
        self.lease = check_seconds("lease", lease)
        self.wait = check_seconds("wait", wait, zero=True)
        self.beta = check_seconds("beta", beta, zero=True)
        self.namespace = check_namespace(namespace or DEFAULT_NAMESPACE)
        self._spawn = spawn or self._spawn_task
        #: The function's module and qualified name: how every key begins.
        self.name = f"{func.__module__}.{func.__qualname__}"
        self._key = CallKey(func, self.name)
        self._flights: dict[_Slot, Flight] = {}
        self._refreshing: set[_Slot] = set()
        self._refresh_failed: dict[_Slot, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the public face ---------------------------------------------------------

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key of a call: ``module.qualname:`` and its arguments as canonical JSON.

        Raises:
            TypeError: the arguments do not fit the function, or are not JSON.
        """
        return self._key(args, kwargs)

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
        key = self.key(*args, **kwargs)
        store = self.store()
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
        value: T = loads(found.text)
        return Result(value, found.cached, found.stale, found.computations)

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Forget the value of these arguments; True if one was kept."""
        return await self.store().delete("v:" + self.key(*args, **kwargs))

    async def computations(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """How many times the value of these arguments has been computed, by everyone."""
        count = await self.store().get("n:" + self.key(*args, **kwargs))
        return count if isinstance(count, int) and not isinstance(count, bool) else 0

    def store(self) -> Store:
        """The namespace of the store where this function's values live."""
        return self._store().namespace(self.namespace)

    async def drain(self) -> None:
        """Wait for the background refreshes this object started itself (not via ``spawn``)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one lookup ----------------------------------------------------------------

    @staticmethod
    def _slot(store: Store, key: str) -> _Slot:
        root, prefix = (store.store, store.prefix) if isinstance(store, Namespace) else (store, "")
        return (id(asyncio.get_running_loop()), id(root), prefix, key)

    def _landed(self, slot: _Slot, flight: Flight, task: asyncio.Future[Found]) -> None:
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

    def _early(self, entry: Entry, now: float) -> bool:
        """XFetch: True, with a probability growing towards expiry, to refresh a fresh value."""
        if self.beta <= 0 or entry.delta <= 0:
            return False
        # 1 - random() is in (0, 1]: its log is finite and not positive.
        ahead = -entry.delta * self.beta * math.log(1.0 - random.random())
        return now + ahead >= entry.fresh_until

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
        renewing = asyncio.ensure_future(self._renew(key, held, stop))
        started = time.monotonic()
        try:
            value = await call()
            try:
                text = dumps(value)
            except InvalidValue as exc:
                raise InvalidValue(f"{self.name} returned a value that is not JSON: {exc}") from exc
            delta = time.monotonic() - started
            # The count lives as long as the entry (it is renewed after the
            # entry is written, so it never goes first): each key costs
            # nothing once its value is gone.
            life = self.ttl + self.stale
            count = await store.incr("n:" + key, ttl=life)
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

    async def _renew(self, key: str, held: Lease, stop: asyncio.Event) -> None:
        """Renew the lock's lease every third of it until ``stop`` is set."""
        while True:
            try:
                async with asyncio.timeout(held.timeout / 3):
                    await stop.wait()
                return
            except TimeoutError:
                pass
            try:
                if not await held.renew():
                    log.warning(
                        "the lock of %r lapsed before it was renewed; another computation "
                        "may run beside this one",
                        key,
                    )
                    return
            except NotImplementedError as exc:
                log.warning("the lock of %r cannot be renewed: %s", key, exc)
                return
            except StoreError as exc:
                log.warning("the lease of %r was not renewed (%s); trying again", key, exc)

    # -- background refreshes ------------------------------------------------------

    def _refresh_soon(
        self, store: Store, key: str, call: Callable[[], Awaitable[T]], seen: Entry
    ) -> None:
        """Start one background refresh of ``key`` in this worker, unless one runs."""
        slot = self._slot(store, key)
        if slot in self._refreshing or self._refresh_failed.get(slot, 0.0) > time.monotonic():
            return
        self._refreshing.add(slot)
        self._spawn(functools.partial(self._refresh, store, key, call, seen, slot))

    async def _refresh(
        self,
        store: Store,
        key: str,
        call: Callable[[], Awaitable[T]],
        seen: Entry,
        slot: _Slot,
    ) -> None:
        try:
            # Done when a value newer than the one seen lands: computed here
            # under the lock, or by whichever worker holds it.
            await self._settle(store, key, call, seen)
            self._refresh_failed.pop(slot, None)
        except StillComputing:
            log.debug("refresh of %r still running elsewhere", key)
        except Exception as exc:
            # Never raised to anyone: the old value stays until its time is
            # up, and callers see that it is stale.
            self._refresh_failed[slot] = time.monotonic() + REFRESH_BACKOFF
            log.warning("refresh of %r failed; its stale value is kept: %r", key, exc)
        finally:
            self._refreshing.discard(slot)
            now = time.monotonic()
            for old in [s for s, until in self._refresh_failed.items() if until <= now]:
                del self._refresh_failed[old]

    def _spawn_task(self, job: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            await job()

        task = asyncio.get_running_loop().create_task(run())
        # Keep a reference until it is done: the loop keeps only a weak one.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def cached(
    store: Store | Callable[[], Store],
    ttl: float = 60.0,
    stale: float = 0.0,
    *,
    lease: float = 10.0,
    wait: float = 30.0,
    beta: float = 1.0,
    namespace: str | None = None,
    spawn: Spawn | None = None,
) -> Callable[[Callable[P, Awaitable[T]]], Cached[P, T]]:
    """Keep an async function's values in ``store``, each computed once: see the module.

    Args:
        store: the store, or a function that returns it when a call needs it.
        ttl: seconds a value is fresh.
        stale: seconds after that during which it is still answered, at once
            and marked stale, while one caller recomputes it in the background.
        lease: seconds of the computing caller's lock, renewed while it works;
            what a computer that dies costs its waiters at most.
        wait: seconds a caller waits for another's computation before
            :class:`StillComputing`.
        beta: XFetch's eagerness to refresh before expiry; 0 turns it off.
        namespace: the store namespace of the entries (``cached``).
        spawn: how to start a background refresh (default: an asyncio task).
    """

    def decorate(func: Callable[P, Awaitable[T]]) -> Cached[P, T]:
        return Cached(
            func,
            store,
            ttl=ttl,
            stale=stale,
            lease=lease,
            wait=wait,
            beta=beta,
            namespace=namespace,
            spawn=spawn,
        )

    return decorate
