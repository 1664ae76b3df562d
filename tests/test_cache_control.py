"""Cache keys under the caller's control: ``ignore``, ``key``, ``unless``, tags, ``refresh``.

Every test runs on each backend (memory, a real SQLite file, a real
redis-server and a real PostgreSQL) through the ``store`` fixture.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from qapp.state import Store
from qapp.store.flight import Cached, cached


class Pool:
    """Stands for a connection pool: an argument that is not JSON."""

    def __init__(self) -> None:
        self.queries = 0


async def test_method_of_a_class_is_cached_per_argument(store: Store) -> None:
    """A decorated method works on instances; with ``ignore=["self"]`` instances share values."""

    class Reports:
        def __init__(self) -> None:
            self.runs = 0

        @cached(store, ttl=60, ignore=["self"])
        async def total(self, day: str) -> int:
            self.runs += 1
            return len(day)

    first, second = Reports(), Reports()
    assert await first.total("2026-12-04") == 10
    info = await second.total.get_with_info("2026-12-04")
    assert (info.value, info.cached) == (10, True)
    assert (first.runs, second.runs) == (1, 0)
    assert await first.total.computations("2026-12-04") == 1


async def test_pool_argument_is_left_out_of_the_key(store: Store) -> None:
    """A function that takes a pool is cached with the pool ignored; other pools hit too."""

    @cached(store, ttl=60, ignore=["pool"])
    async def user(pool: Pool, user_id: int) -> dict[str, Any]:
        pool.queries += 1
        return {"id": user_id}

    one, two = Pool(), Pool()
    assert await user(one, 7) == {"id": 7}
    assert await user(two, 7) == {"id": 7}
    assert await user(two, 8) == {"id": 8}
    assert (one.queries, two.queries) == (1, 1)


async def test_argument_that_is_not_json_says_how_to_ignore_it(store: Store) -> None:
    """Without ``ignore``, a pool argument is a TypeError that names ``ignore=``."""

    @cached(store, ttl=60)
    async def user(pool: Pool, user_id: int) -> int:
        return user_id

    with pytest.raises(TypeError, match=r"ignore=\[name\]"):
        await user(Pool(), 1)


def test_ignoring_an_unknown_argument_is_refused(store: Store) -> None:
    """``ignore`` naming no parameter of the function fails at decoration."""
    with pytest.raises(ValueError, match="no argument pol to ignore"):

        @cached(store, ttl=60, ignore=["pol"])
        async def user(pool: Pool, user_id: int) -> int:
            return user_id


async def test_key_function_names_the_entry(store: Store) -> None:
    """``key=`` makes the key from the arguments; calls with one key share one value."""
    runs = 0

    @cached(store, ttl=60, key=lambda user_id, detail: str(user_id))
    async def profile(user_id: int, detail: bool) -> int:
        nonlocal runs
        runs += 1
        return user_id

    assert await profile(3, True) == 3
    assert (await profile.get_with_info(3, False)).cached is True
    assert runs == 1
    assert profile.key(3, False).endswith(":3")


async def test_unless_keeps_nothing(store: Store) -> None:
    """A value for which ``unless`` is true is answered but not kept: the next call computes."""
    runs = 0

    @cached(store, ttl=60, unless=lambda value: value is None)
    async def find(name: str) -> str | None:
        nonlocal runs
        runs += 1
        return None if name == "nobody" else name.upper()

    assert await find("nobody") is None
    assert await find("nobody") is None
    assert await find("ada") == "ADA"
    assert (await find.get_with_info("ada")).cached is True
    assert runs == 3


async def test_invalidate_tag_forgets_every_value_with_it(store: Store) -> None:
    """invalidate_tag recomputes every call that carries the tag, and no other."""
    runs: list[int] = []

    @cached(store, ttl=60, tags=lambda user_id: [f"user:{user_id}", "users"])
    async def profile(user_id: int) -> int:
        runs.append(user_id)
        return user_id * 10

    for uid in (1, 2):
        assert await profile(uid) == uid * 10
    await profile.invalidate_tag("user:1")
    assert (await profile.get_with_info(1)).cached is False
    assert (await profile.get_with_info(2)).cached is True
    await profile.invalidate_tag("users")
    assert (await profile.get_with_info(1)).cached is False
    assert (await profile.get_with_info(2)).cached is False
    assert runs == [1, 2, 1, 1, 2]


async def test_tag_tokens_expire_with_the_values(store: Store) -> None:
    """A tag's token lives ttl + stale seconds: as long as the values it can hide."""

    @cached(store, ttl=30, stale=10, tags=["t"])
    async def value() -> int:
        return 1

    await value.invalidate_tag("t")
    remaining = await store.namespace("cached").expire("t:t", 40)
    assert remaining is True  # the token is there, with a ttl the store honours


async def test_single_flight_holds_with_tags(store: Store) -> None:
    """50 concurrent first calls of one tagged key compute it once."""
    runs = 0

    @cached(store, ttl=60, tags=["report"])
    async def report(day: str) -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return day

    answers = await asyncio.gather(*(report("d") for _ in range(50)))
    assert answers == ["d"] * 50
    assert runs == 1


async def test_refresh_recomputes_a_fresh_value(store: Store) -> None:
    """refresh() computes now even though the kept value is fresh, and keeps the new one."""
    runs = 0

    @cached(store, ttl=60)
    async def clock() -> int:
        nonlocal runs
        runs += 1
        return runs

    assert await clock() == 1
    refreshed = await clock.refresh()
    assert (refreshed.value, refreshed.cached) == (2, False)
    assert (await clock.get_with_info()).value == 2
    assert await clock.computations() == 2


def test_bad_tag_is_refused(store: Store) -> None:
    """A tag that is not 1 to 200 printable characters fails at decoration."""
    with pytest.raises(ValueError, match="a tag is"):
        cached(store, ttl=60, tags=[""])(_noop)


async def _noop() -> None:
    return None


def test_decorated_method_on_the_class_is_the_cached_function(store: Store) -> None:
    """Looked up on the class, a cached method is the Cached object itself."""

    class Holder:
        @cached(store, ttl=60, ignore=["self"])
        async def value(self) -> int:
            return 1

    assert isinstance(Holder.__dict__["value"], Cached)
    assert Holder.value is Holder.__dict__["value"]


async def test_clear_forgets_one_functions_values(store: Store) -> None:
    """clear() forgets every value of one function and leaves another function's alone."""

    @cached(store, ttl=60)
    async def square(n: int) -> int:
        return n * n

    @cached(store, ttl=60)
    async def cube(n: int) -> int:
        return n**3

    for n in range(5):
        await square(n)
        await cube(n)
    assert await square.clear() == 5
    assert (await square.get_with_info(2)).cached is False
    assert (await cube.get_with_info(2)).cached is True
