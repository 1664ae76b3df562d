"""``cached`` (qapp.store.flight) on every backend: one computation however many ask, stale values,
early refresh, failures never cached; and the store primitives under it (lease, listen)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import pytest

from qapp.state import InvalidValue, LockTimeout, Store, open_store
from qapp.store.flight import Cached, StillComputing, cached


@dataclass
class Work:
    """A slow async function's bookkeeping: how often it ran, and when."""

    seconds: float = 0.05
    calls: int = 0
    #: (start, end) of every finished run, on the wall clock the entries use.
    runs: list[tuple[float, float]] = field(default_factory=list)
    fail: bool = False

    async def run(self, x: int) -> dict[str, Any]:
        self.calls += 1
        began = time.time()
        await asyncio.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("the work failed")
        self.runs.append((began, time.time()))
        return {"x": x, "run": self.calls}


def flight(store: Store, work: Work, **options: Any) -> Cached[[int], dict[str, Any]]:
    """``work.run`` under ``cached`` on ``store``, with ``options``."""

    async def compute(x: int) -> dict[str, Any]:
        return await work.run(x)

    return cached(store, **options)(compute)


@pytest.fixture
async def sharers(store_url: str) -> AsyncIterator[list[Store]]:
    """Four connections to one store, as four workers have: one store object each.

    On memory:// a store is one process's, so the four are one object.
    """
    if store_url.startswith("memory"):
        one = await open_store(store_url)
        yield [one] * 4
        await one.close()
        return
    opened = [await open_store(store_url) for _ in range(4)]
    yield opened
    for each in opened:
        await each.close()


# --- the store primitives ---------------------------------------------------------


async def test_lease_renewed_outlives_its_timeout(store: Store) -> None:
    """A lease renewed before it lapses keeps the lock past its timeout: nobody else gets it."""
    async with store.lease("job", timeout=0.4, wait=0) as held:
        for _ in range(3):
            await asyncio.sleep(0.2)
            assert await held.renew() is True
        # 0.6 s after taking a 0.4 s lease, it is still held.
        with pytest.raises(LockTimeout):
            async with store.lock("job", timeout=5, wait=0):
                pass
    async with store.lock("job", timeout=5, wait=0):
        pass  # released on the way out


async def test_lapsed_lease_taken_by_another_cannot_be_renewed(shared_store_url: str) -> None:
    """Once a lease lapsed and another holder took the lock, renewing says False.

    (Only stores shared by processes have leases: a memory lock cannot lapse.)
    """
    store = await open_store(shared_store_url)
    try:
        async with store.lease("job", timeout=0.2, wait=0) as held:
            await asyncio.sleep(0.3)
            async with store.lock("job", timeout=5, wait=0):
                assert await held.renew() is False
    finally:
        await store.close()


async def test_notify_wakes_a_listener(sharers: list[Store]) -> None:
    """notify wakes a listener of its name in this process, and every sharer when pushes says so."""
    listener, notifier = sharers[0], sharers[1]
    async with listener.listen("topic") as wakeup, listener.listen("other") as bystander:
        waiting = asyncio.create_task(wakeup.wait(10))
        await listener.notify("topic")
        assert await waiting is True
        assert await bystander.wait(0.05) is False
        if wakeup.pushes:
            # Another connection (another worker, another host) reaches it too.
            waiting = asyncio.create_task(wakeup.wait(10))
            await notifier.notify("topic")
            assert await waiting is True
    # memory:// is one process; Redis (pub/sub) and PostgreSQL (LISTEN/NOTIFY) carry
    # notifications between processes; SQLite cannot.
    expected = {"memory": True, "redis": True, "sqlite": False, "postgresql": True}
    if listener.name in expected:
        assert wakeup.pushes is expected[listener.name]


# --- cached: one computation --------------------------------------------------------


async def test_first_call_computes_then_cached(store: Store) -> None:
    """The first call computes (cached false, computation 1); the next is kept and says so."""
    work = Work()
    report = flight(store, work)
    first = await report.get_with_info(7)
    second = await report.get_with_info(7)
    assert (first.value, first.cached, first.stale, first.computations) == (
        {"x": 7, "run": 1},
        False,
        False,
        1,
    )
    assert (second.value, second.cached, second.stale, second.computations) == (
        {"x": 7, "run": 1},
        True,
        False,
        1,
    )
    assert await report(7) == {"x": 7, "run": 1}
    assert work.calls == 1
    assert await report.computations(7) == 1


async def test_key_is_name_and_canonical_json_arguments(store: Store) -> None:
    """Positional, keyword and default arguments make one key: the name plus sorted JSON."""

    async def fetch(a: int, b: str = "z", *, c: bool = False) -> int:
        return a

    f = cached(store)(fetch)
    name = f"{fetch.__module__}.{fetch.__qualname__}"
    assert f.key(1) == f.key(a=1, b="z") == f.key(1, "z", c=False)
    assert f.key(1) == f'{name}:{{"a":1,"b":"z","c":false}}'
    assert f.key(1) != f.key(1, "y")
    assert len(f.key(1, "x" * 10_000)) < len(name) + 80  # long arguments are hashed


async def test_arguments_not_json_are_refused_and_nothing_runs(store: Store) -> None:
    """Arguments that are not JSON raise a clear TypeError; the function never runs."""
    calls = 0

    async def fetch(arg: Any) -> int:
        nonlocal calls
        calls += 1
        return 1

    f = cached(store)(fetch)
    for bad in (object(), {1, 2}, float("nan"), b"bytes"):
        with pytest.raises(TypeError, match="must be JSON"):
            await f(bad)
    with pytest.raises(TypeError, match="unexpected keyword"):
        await f(1, nope=2)  # type: ignore[call-arg]
    assert calls == 0


async def test_result_not_json_is_an_error_and_not_cached(store: Store) -> None:
    """A result that is not JSON raises InvalidValue, is not kept, and is not counted."""
    calls = 0

    async def fetch(x: int) -> Any:
        nonlocal calls
        calls += 1
        return {"when": object()}

    f = cached(store)(fetch)
    for _ in range(2):
        with pytest.raises(InvalidValue, match="not JSON"):
            await f(1)
    assert calls == 2
    assert await f.computations(1) == 0
    assert await f.store().get("v:" + f.key(1)) is None


async def test_concurrent_cold_calls_compute_once(store: Store) -> None:
    """200 concurrent cold calls in one worker: one computation, one answer says cached false."""
    work = Work(seconds=0.2)
    report = flight(store, work)
    results = await asyncio.gather(*(report.get_with_info(1) for _ in range(200)))
    assert work.calls == 1
    assert [r.cached for r in results].count(False) == 1
    assert {r.computations for r in results} == {1}
    assert all(r.value == {"x": 1, "run": 1} for r in results)
    # Every caller has its own copy: one caller's change is nobody else's.
    results[0].value["x"] = 99
    assert results[1].value["x"] == 1


async def test_work_three_times_the_lease_computes_once_across_sharers(
    sharers: list[Store],
) -> None:
    """Four workers' callers, work lasting 3 leases: the lease is renewed, and one computes."""
    work = Work(seconds=0.9)
    # One Cached per worker, as every worker imports the app afresh.
    flights = [flight(s, work, lease=0.3, wait=10) for s in sharers]
    calls = [f.get_with_info(5) for f in flights for _ in range(50)]
    results = await asyncio.gather(*calls)
    assert work.calls == 1
    assert [r.cached for r in results].count(False) == 1
    assert {r.computations for r in results} == {1}


async def test_waiter_gives_up_with_still_computing(store: Store) -> None:
    """A caller whose value another holder never finishes gets StillComputing after ``wait``."""
    work = Work()
    report = flight(store, work, wait=0.3)
    async with report.store().lock(report.key(1), timeout=30, wait=0):
        began = time.monotonic()
        with pytest.raises(StillComputing, match="still being computed") as raised:
            await report(1)
        assert time.monotonic() - began >= 0.3
    assert isinstance(raised.value, LockTimeout)  # a 503 in the app
    assert work.calls == 0


async def test_invalidate_forgets_one_value(store: Store) -> None:
    """invalidate removes one key's value: the next call computes it again, and counts it."""
    work = Work()
    report = flight(store, work)
    await report(1)
    await report(2)
    assert await report.invalidate(1) is True
    assert await report.invalidate(1) is False
    again = await report.get_with_info(1)
    assert (again.cached, again.computations, again.value["run"]) == (False, 2, 3)
    assert (await report.get_with_info(2)).cached is True


async def test_count_of_computations_expires_with_the_value(store: Store) -> None:
    """The count of a key's computations lives as long as its value (ttl + stale), no longer:
    once both are gone the key has left nothing in the store, and counts from 1 again."""
    work = Work(seconds=0)
    report = flight(store, work, ttl=0.2, stale=0.2, beta=0)
    await report(1)
    await asyncio.sleep(0.25)
    assert await report.computations(1) == 1  # past ttl, the stale value and its count stay
    await asyncio.sleep(0.25)
    assert await report.computations(1) == 0
    assert await report.store().get("v:" + report.key(1)) is None
    assert (await report.get_with_info(1)).computations == 1


async def test_callers_gone_stop_the_work_and_free_the_lock(store: Store) -> None:
    """When every caller is cancelled the computation stops, counts nothing and frees the lock."""
    work = Work(seconds=5)
    report = flight(store, work, lease=30)
    callers = [asyncio.create_task(report(1)) for _ in range(3)]
    await asyncio.sleep(0.2)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    async with report.store().lock(report.key(1), timeout=5, wait=0):
        pass  # free now, not after the 30 s lease
    assert await report.computations(1) == 0


async def test_one_caller_gone_leaves_the_others_their_value(store: Store) -> None:
    """A cancelled caller does not stop a computation that others still wait for."""
    work = Work(seconds=0.3)
    report = flight(store, work)
    leaving = asyncio.create_task(report(1))
    staying = asyncio.create_task(report(1))
    await asyncio.sleep(0.1)
    leaving.cancel()
    assert await staying == {"x": 1, "run": 1}
    assert work.calls == 1


async def test_caller_joining_as_the_last_one_leaves_still_gets_its_value(store: Store) -> None:
    """A call that arrives while a computation is being stopped (its callers gone) computes anew."""
    work = Work(seconds=0.3)
    report = flight(store, work)
    leaving = asyncio.create_task(report(1))
    await asyncio.sleep(0.1)
    leaving.cancel()
    arriving = asyncio.create_task(report(1))
    assert await arriving == {"x": 1, "run": 2}
    assert leaving.cancelled()


async def test_ttl_zero_is_refused(store: Store) -> None:
    """Settings that cannot work are refused when decorating, not on first use."""
    work = Work()
    with pytest.raises(ValueError, match="ttl"):
        flight(store, work, ttl=0)
    with pytest.raises(ValueError, match="stale"):
        flight(store, work, stale=-1)
    with pytest.raises(TypeError, match="async function"):
        cached(store)(len)  # type: ignore[arg-type]


# --- ttl, stale and refresh ------------------------------------------------------------


async def test_expired_without_stale_is_computed_by_the_next_caller(store: Store) -> None:
    """Without ``stale`` an expired value is gone, its count with it: the next call computes
    (computation 1 again) while others wait."""
    work = Work(seconds=0.1)
    report = flight(store, work, ttl=0.2, beta=0)
    await report(1)
    await asyncio.sleep(0.3)
    results = await asyncio.gather(*(report.get_with_info(1) for _ in range(20)))
    assert work.calls == 2
    assert {(r.stale, r.computations, r.value["run"]) for r in results} == {(False, 1, 2)}
    assert [r.cached for r in results].count(False) == 1


async def test_stale_value_answered_at_once_while_one_refresh_runs(sharers: list[Store]) -> None:
    """Past its ttl, a stale value is answered at once, marked stale, while one refresh runs."""
    work = Work(seconds=1.0)
    flights = [flight(s, work, ttl=0.2, stale=30, beta=0, lease=5) for s in sharers]
    await flights[0](1)
    await asyncio.sleep(0.3)
    began = time.monotonic()
    stale = await asyncio.gather(*(f.get_with_info(1) for f in flights for _ in range(25)))
    assert time.monotonic() - began < work.seconds  # nobody waited for the work
    assert all(r.stale and r.cached and r.value["run"] == 1 for r in stale)
    for f in flights:
        await f.drain()
    assert work.calls == 2  # one refresh, across all four workers
    fresh = await flights[3].get_with_info(1)
    assert (fresh.stale, fresh.cached, fresh.computations, fresh.value["run"]) == (
        False,
        True,
        2,
        2,
    )


async def test_steady_load_never_waits_and_refreshes_once_per_expiry(store: Store) -> None:
    """Under steady load across many expiries no caller waits for work, one refresh per expiry."""
    ttl, work = 0.2, Work(seconds=0.5)
    report = flight(store, work, ttl=ttl, stale=60, beta=0)
    await report(1)
    slowest = 0.0
    answers = 0
    until = time.monotonic() + 4.0

    async def lane() -> None:
        nonlocal slowest, answers
        while time.monotonic() < until:
            began = time.monotonic()
            result = await report.get_with_info(1)
            slowest = max(slowest, time.monotonic() - began)
            answers += 1
            assert result.cached
            await asyncio.sleep(0.005)

    await asyncio.gather(*(lane() for _ in range(8)))
    await report.drain()
    assert answers > 100
    assert slowest < work.seconds  # no answer took the work time
    # Several expiries, each refreshed once: every refresh began after the
    # value before it had expired (a run ends, its value is fresh for ttl).
    assert len(work.runs) >= 4
    for (_, ended), (began, _) in zip(work.runs, work.runs[1:], strict=False):
        assert began >= ended + ttl - 0.02


async def test_early_refresh_renews_a_fresh_value_before_it_expires(store: Store) -> None:
    """With XFetch on, steady calls recompute a fresh value before it expires, in the background."""
    work = Work(seconds=0.05)
    report = flight(store, work, ttl=1.0, beta=20)
    await report(1)
    results = []
    until = time.monotonic() + 0.6
    while time.monotonic() < until:
        results.append(await report.get_with_info(1))
        await asyncio.sleep(0.01)
    await report.drain()
    # delta 0.05 s × beta 20: refreshes start about a second ahead, so well
    # before the value's one second is up, and nobody saw it stale or waited.
    assert work.calls >= 2
    assert not any(r.stale for r in results)
    assert all(r.cached for r in results)


async def test_no_early_refresh_with_beta_zero(store: Store) -> None:
    """beta=0 turns early refresh off: a fresh value is never recomputed."""
    work = Work(seconds=0.05)
    # A ttl far longer than the calls take, even on a loaded machine: only an
    # early refresh could compute again.
    report = flight(store, work, ttl=30, beta=0)
    for _ in range(40):
        await report(1)
        await asyncio.sleep(0.01)
    await report.drain()
    assert work.calls == 1


# --- failures ------------------------------------------------------------------------


async def test_failure_without_a_value_reaches_every_caller_and_is_not_cached(
    store: Store,
) -> None:
    """A failing computation raises to its callers, keeps nothing, and the next call retries."""
    work = Work(seconds=0.1, fail=True)
    report = flight(store, work)
    outcomes = await asyncio.gather(*(report(1) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) and str(o) == "the work failed" for o in outcomes)
    assert work.calls == 1  # the callers of one worker share one flight
    assert await report.store().get("v:" + report.key(1)) is None
    assert await report.computations(1) == 0
    work.fail = False
    result = await report.get_with_info(1)
    assert (result.cached, result.computations, result.stale) == (False, 1, False)


async def test_failed_refresh_keeps_serving_the_stale_value(store: Store) -> None:
    """A refresh that fails leaves the stale value in place, answered and marked stale."""
    work = Work(seconds=0.05)
    report = flight(store, work, ttl=0.2, stale=30, beta=0)
    first = await report(1)
    work.fail = True
    await asyncio.sleep(0.3)
    for _ in range(3):
        result = await report.get_with_info(1)
        assert (result.value, result.stale, result.cached, result.computations) == (
            first,
            True,
            True,
            1,
        )
        await asyncio.sleep(0.1)  # the refresh fails meanwhile
    await report.drain()
    assert work.calls == 2  # one refresh tried; the next waits out the backoff
    work.fail = False
    await asyncio.sleep(1.1)  # past the backoff: the next stale answer refreshes
    assert (await report.get_with_info(1)).stale is True
    await report.drain()
    fresh = await report.get_with_info(1)
    assert (fresh.stale, fresh.computations, fresh.value["run"]) == (False, 2, 3)


async def _all(calls: list[Awaitable[Any]]) -> list[Any]:
    return list(await asyncio.gather(*calls))


async def test_two_functions_never_share_keys(store: Store) -> None:
    """Two functions with the same arguments keep separate values."""

    async def one(x: int) -> str:
        return "one"

    async def two(x: int) -> str:
        return "two"

    f, g = cached(store)(one), cached(store)(two)
    assert await _all([f(1), g(1)]) == ["one", "two"]
    assert f.key(1) != g.key(1)
