"""The conformance suite: every backend keeps the same promises."""

from __future__ import annotations

import asyncio
import math

import pytest

from qapp.state import InvalidValue, LockTimeout, Store, open_store
from qapp.store.backends.memory import MemoryStore


class TestValues:
    async def test_round_trip_nested_unicode_json(self, store: Store) -> None:
        """Nested, unicode JSON comes back exactly as it went in."""
        value = {"name": "Zoë ✓ 東京", "n": [1, 2.5, None, True], "deep": {"a": {"b": []}}}
        await store.set("k", value)
        assert await store.get("k") == value

    @pytest.mark.parametrize("value", [0, -7, 3.25, "", "text", None, False, [], {}])
    async def test_scalars_round_trip(self, store: Store, value: object) -> None:
        """Every JSON type, including falsy ones, round-trips."""
        await store.set("k", value)
        assert await store.get("k") == value

    async def test_missing_key_is_none(self, store: Store) -> None:
        """A key never set reads as None, not an error."""
        assert await store.get("absent") is None

    async def test_set_overwrites(self, store: Store) -> None:
        """A second set replaces the value."""
        await store.set("k", 1)
        await store.set("k", "two")
        assert await store.get("k") == "two"

    async def test_keys_with_separators_are_distinct(self, store: Store) -> None:
        """Keys that differ only in separators or case never share data."""
        keys = ["a:b", "a::b", "a.b", "A:b", "a:b ", "qapp:k:a:b", "ключ"]
        for i, key in enumerate(keys):
            await store.set(key, i)
        assert [await store.get(key) for key in keys] == list(range(len(keys)))

    @pytest.mark.parametrize(
        "bad", [object(), {1, 2}, math.nan, math.inf, b"bytes", "\ud800", {"k\udfff": 1}]
    )
    async def test_non_json_refused(self, store: Store, bad: object) -> None:
        """A value JSON cannot hold is refused with InvalidValue and stores nothing."""
        with pytest.raises(InvalidValue):
            await store.set("k", bad)
        with pytest.raises(InvalidValue):
            await store.add("k", bad)
        assert await store.get("k") is None

    async def test_returned_value_is_a_copy(self, store: Store) -> None:
        """Mutating a value read from the store does not change what is stored."""
        await store.set("k", {"a": [1]})
        got = await store.get("k")
        got["a"].append(2)
        assert await store.get("k") == {"a": [1]}


class TestDelete:
    async def test_delete_twice(self, store: Store) -> None:
        """delete answers True once, then False; the key is gone."""
        await store.set("k", 1)
        assert await store.delete("k") is True
        assert await store.delete("k") is False
        assert await store.get("k") is None

    async def test_delete_expired_is_false(self, store: Store) -> None:
        """Deleting a key that has expired reports that it was not there."""
        await store.set("k", 1, ttl=0.05)
        await asyncio.sleep(0.15)
        assert await store.delete("k") is False


class TestTTL:
    async def test_set_expires(self, store: Store) -> None:
        """A key set with a fractional ttl is readable, then never returned once expired."""
        await store.set("k", "v", ttl=0.5)
        assert await store.get("k") == "v"
        await asyncio.sleep(0.6)
        assert await store.get("k") is None

    async def test_set_without_ttl_clears_ttl(self, store: Store) -> None:
        """A plain set over a key with a ttl makes it permanent."""
        await store.set("k", 1, ttl=0.1)
        await store.set("k", 2)
        await asyncio.sleep(0.2)
        assert await store.get("k") == 2

    async def test_add_expires_and_can_be_added_again(self, store: Store) -> None:
        """A key made by add expires, and add succeeds again after that."""
        assert await store.add("k", "first", ttl=0.1) is True
        assert await store.add("k", "second", ttl=0.1) is False
        await asyncio.sleep(0.2)
        assert await store.get("k") is None
        assert await store.add("k", "third") is True
        assert await store.get("k") == "third"

    async def test_incr_created_key_expires(self, store: Store) -> None:
        """incr's ttl applies when it creates the key; after expiry it counts from 0."""
        assert await store.incr("c", ttl=0.2) == 1
        assert await store.incr("c", ttl=0.2) == 2
        await asyncio.sleep(0.3)
        assert await store.get("c") is None
        assert await store.incr("c", 5) == 5

    async def test_incr_keeps_existing_expiry(self, store: Store) -> None:
        """Later increments do not extend the window the first one opened."""
        await store.incr("c", ttl=0.5)
        await asyncio.sleep(0.3)
        await store.incr("c", ttl=0.5)
        await asyncio.sleep(0.35)
        assert await store.get("c") is None

    async def test_expire_slides_the_ttl(self, store: Store) -> None:
        """expire gives a live key a new ttl, so touching it keeps it alive."""
        await store.set("k", "v", ttl=0.4)
        await asyncio.sleep(0.25)
        assert await store.expire("k", 0.4) is True
        await asyncio.sleep(0.25)
        assert await store.get("k") == "v"
        await asyncio.sleep(0.3)
        assert await store.get("k") is None
        assert await store.expire("k", 1) is False

    async def test_expire_none_makes_permanent(self, store: Store) -> None:
        """expire with None removes the ttl; on a missing key it answers False."""
        await store.incr("c", ttl=0.2)
        assert await store.expire("c", None) is True
        await asyncio.sleep(0.3)
        assert await store.get("c") == 1
        assert await store.expire("absent", None) is False

    @pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf])
    async def test_bad_ttl_refused(self, store: Store, ttl: float) -> None:
        """A ttl that is not a positive finite number is refused and stores nothing."""
        with pytest.raises(ValueError, match="ttl"):
            await store.set("k", 1, ttl=ttl)
        assert await store.get("k") is None


class TestIncr:
    async def test_incr_counts_from_zero(self, store: Store) -> None:
        """incr on a missing key starts from 0; deltas may be negative."""
        assert await store.incr("c") == 1
        assert await store.incr("c", 10) == 11
        assert await store.incr("c", -12) == -1
        assert await store.get("c") == -1

    async def test_incr_after_set(self, store: Store) -> None:
        """incr continues from an integer written by set."""
        await store.set("c", 41)
        assert await store.incr("c") == 42

    @pytest.mark.parametrize("value", ["text", 1.5, [1], {"a": 1}])
    async def test_incr_non_integer_refused(self, store: Store, value: object) -> None:
        """incr of a value that is not an integer raises InvalidValue and changes nothing."""
        await store.set("c", value)
        with pytest.raises(InvalidValue):
            await store.incr("c")
        assert await store.get("c") == value

    async def test_500_concurrent_incr_are_exact(self, store: Store) -> None:
        """500 concurrent increments give exactly 500, each number handed out once."""
        values = await asyncio.gather(*(store.incr("c") for _ in range(500)))
        assert sorted(values) == list(range(1, 501))
        assert await store.get("c") == 500


class TestAdd:
    async def test_add_only_if_absent(self, store: Store) -> None:
        """add writes a missing key and leaves an existing one alone."""
        assert await store.add("k", 1) is True
        assert await store.add("k", 2) is False
        assert await store.get("k") == 1

    async def test_100_concurrent_add_one_winner(self, store: Store) -> None:
        """Of 100 concurrent adds of one key exactly one wins, and its value stays."""
        results = await asyncio.gather(*(store.add("k", i) for i in range(100)))
        assert results.count(True) == 1
        assert await store.get("k") == results.index(True)


class TestLock:
    async def test_critical_sections_never_overlap(self, store: Store) -> None:
        """100 critical sections that await inside never overlap, and lose no update."""
        inside = 0
        most_inside = 0

        async def section() -> None:
            nonlocal inside, most_inside
            async with store.lock("l", timeout=30):
                inside += 1
                most_inside = max(most_inside, inside)
                # Read, await, write: the lost-update pattern, made safe by the lock.
                value = await store.get("n") or 0
                await asyncio.sleep(0)
                await store.set("n", value + 1)
                inside -= 1

        await asyncio.gather(*(section() for _ in range(100)))
        assert most_inside == 1
        assert await store.get("n") == 100

    async def test_held_lock_times_out(self, store: Store) -> None:
        """A waiter gives up with LockTimeout while another holds the lock."""
        async with store.lock("l", timeout=5):
            with pytest.raises(LockTimeout):
                async with store.lock("l", timeout=5, wait=0.2):
                    pytest.fail("acquired a lock that is held")

    async def test_wait_zero_takes_a_free_lock_only(self, store: Store) -> None:
        """wait=0 acquires a free lock at once and fails at once on a held one."""
        async with store.lock("l", wait=0):
            with pytest.raises(LockTimeout):
                async with store.lock("l", wait=0):
                    pytest.fail("acquired a lock that is held")

    async def test_lock_released_on_error(self, store: Store) -> None:
        """An exception inside the block releases the lock."""
        with pytest.raises(RuntimeError):
            async with store.lock("l"):
                raise RuntimeError("boom")
        async with store.lock("l", wait=0.5):
            pass

    async def test_lock_released_on_cancel(self, store: Store) -> None:
        """A holder cancelled inside the block releases the lock."""
        entered = asyncio.Event()

        async def holder() -> None:
            async with store.lock("l", timeout=30):
                entered.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(holder())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with store.lock("l", wait=1):
            pass

    async def test_locks_and_keys_are_separate(self, store: Store) -> None:
        """Holding a lock named like a key neither reads nor writes that key."""
        await store.set("l", "data")
        async with store.lock("l"):
            assert await store.get("l") == "data"
        assert await store.get("l") == "data"

    async def test_different_names_do_not_block(self, store: Store) -> None:
        """Locks with different names are independent."""
        async with store.lock("a"), store.lock("b", wait=0.2):
            pass


async def test_memory_store_is_bounded() -> None:
    """Beyond max_entries the memory store evicts the oldest entries."""
    store = MemoryStore(max_entries=3)
    for key in "abcd":
        await store.set(key, key)
    assert await store.get("a") is None
    assert [await store.get(k) for k in "bcd"] == ["b", "c", "d"]


async def test_memory_store_rewrite_makes_entry_young() -> None:
    """Writing a key again protects it from the next eviction."""
    store = MemoryStore(max_entries=2)
    await store.set("a", 1)
    await store.set("b", 2)
    await store.set("a", 3)
    await store.set("c", 4)
    assert await store.get("b") is None
    assert await store.get("a") == 3


async def test_memory_url_sets_the_bound() -> None:
    """``memory://?max_entries=N`` bounds each namespace at N entries."""
    store = await open_store("memory://?max_entries=2")
    assert isinstance(store, MemoryStore)
    for key in ("a", "b", "c"):
        await store.set(key, 1)
    assert [await store.get(k) for k in ("a", "b", "c")] == [None, 1, 1]


async def test_memory_namespaces_are_evicted_apart() -> None:
    """A flood of one namespace evicts its own oldest entries, never another namespace's."""
    store = MemoryStore(max_entries=3)
    users, sessions = store.namespace("user"), store.namespace("session")
    await users.set("ada", {"name": "ada"})
    for n in range(100):
        await sessions.set(f"s{n}", n)
    assert await users.get("ada") == {"name": "ada"}
    assert [await sessions.get(f"s{n}") for n in (96, 97, 98, 99)] == [None, 97, 98, 99]
    # A key written under the prefix before its namespace existed is still found.
    await store.set("late:k", 1)
    assert await store.namespace("late").get("k") == 1


async def test_namespaces_do_not_collide(store: Store) -> None:
    """Two namespaces' keys and locks never meet; views nest."""
    a, b = store.namespace("a"), store.namespace("b")
    await a.set("k", 1)
    await b.set("k", 2)
    assert (await a.get("k"), await b.get("k"), await store.get("a:k")) == (1, 2, 1)
    assert await a.namespace("x").incr("n") == 1
    assert await store.get("a:x:n") == 1
    async with a.lock("l", wait=0), b.lock("l", wait=0):
        pass
    with pytest.raises(ValueError, match="namespace"):
        store.namespace("bad:name")
