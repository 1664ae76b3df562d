"""The conformance suite of ttl, get_many, set_many, scan and clear: every backend alike."""

from __future__ import annotations

import asyncio
import math

import pytest

from qapp.state import InvalidValue, LockTimeout, Store
from qapp.store.backends.postgres_keys import bytes_end
from qapp.store.backends.sqlite_keys import prefix_end
from qapp.store.interface import MAX_SCAN_BATCH, SCAN_BATCH


async def scanned(store: Store, prefix: str = "", batch: int = SCAN_BATCH) -> list[str]:
    """Every key ``store.scan(prefix, batch=batch)`` yields, in the order it yields them."""
    return [key async for key in store.scan(prefix, batch=batch)]


class TestTTLLeft:
    async def test_ttl_of_a_key_with_expiry(self, store: Store) -> None:
        """ttl says the seconds a key has left, fractions kept, never more than it was given."""
        await store.set("k", 1, ttl=10.5)
        left = await store.ttl("k")
        assert left is not None
        assert 9.5 < left <= 10.5

    async def test_key_without_expiry_has_infinite_ttl(self, store: Store) -> None:
        """A key set, added or counted without a ttl lives forever: its ttl is math.inf."""
        await store.set("s", 1)
        await store.add("a", 1)
        await store.incr("c")
        assert [await store.ttl(key) for key in ("s", "a", "c")] == [math.inf] * 3

    async def test_missing_or_expired_key_has_no_ttl(self, store: Store) -> None:
        """A key never set, deleted or expired has a ttl of None, as get says None for it."""
        await store.set("gone", 1)
        await store.delete("gone")
        await store.set("short", 1, ttl=0.05)
        await asyncio.sleep(0.15)
        assert [await store.ttl(key) for key in ("never", "gone", "short")] == [None] * 3

    async def test_ttl_follows_expire(self, store: Store) -> None:
        """expire changes what ttl says: a new number of seconds, or math.inf for None."""
        await store.set("k", 1, ttl=100)
        await store.expire("k", 3)
        left = await store.ttl("k")
        assert left is not None
        assert 2 < left <= 3
        await store.expire("k", None)
        assert await store.ttl("k") == math.inf

    async def test_ttl_through_a_namespace(self, store: Store) -> None:
        """A namespace's ttl reads its own key, not the root key of the same name."""
        view = store.namespace("ns")
        await view.set("k", 1, ttl=50)
        await store.set("k", 1)
        left = await view.ttl("k")
        assert left is not None
        assert 49 < left <= 50
        assert await store.ttl("k") == math.inf


class TestMany:
    async def test_get_many_leaves_out_missing_and_expired_keys(self, store: Store) -> None:
        """get_many answers the live keys only: a stored null is told apart from a missing key."""
        await store.set_many({"a": 1, "b": None, "c": {"x": [1]}})
        await store.set("old", 1, ttl=0.05)
        await asyncio.sleep(0.15)
        got = await store.get_many(["a", "b", "c", "old", "never", "a"])
        assert got == {"a": 1, "b": None, "c": {"x": [1]}}

    async def test_empty_calls_do_nothing(self, store: Store) -> None:
        """get_many of no keys is an empty dict, and set_many of an empty mapping writes nothing."""
        await store.set_many({})
        assert await store.get_many([]) == {}
        assert await scanned(store) == []

    async def test_set_many_gives_every_key_the_ttl(self, store: Store) -> None:
        """set_many with a ttl makes each key expire after it, and replaces existing values."""
        await store.set("a", "old")
        await store.set_many({"a": 1, "b": 2}, ttl=0.3)
        for key in ("a", "b"):
            left = await store.ttl(key)
            assert left is not None
            assert 0 < left <= 0.3
        assert await store.get_many(["a", "b"]) == {"a": 1, "b": 2}
        await asyncio.sleep(0.4)
        assert await store.get_many(["a", "b"]) == {}

    async def test_set_many_without_ttl_makes_keys_permanent(self, store: Store) -> None:
        """set_many without a ttl clears the ttl a key had, as set does."""
        await store.set("a", 1, ttl=5)
        await store.set_many({"a": 2})
        assert await store.ttl("a") == math.inf

    @pytest.mark.parametrize("bad", [math.nan, object(), "\ud800"])
    async def test_one_bad_value_stores_nothing(self, store: Store, bad: object) -> None:
        """A value JSON cannot hold fails the whole set_many with InvalidValue, before any write."""
        with pytest.raises(InvalidValue):
            await store.set_many({"a": 1, "b": bad, "c": 3})
        assert await store.get_many(["a", "b", "c"]) == {}

    @pytest.mark.parametrize("ttl", [0, -1, math.inf])
    async def test_bad_ttl_stores_nothing(self, store: Store, ttl: float) -> None:
        """set_many refuses a ttl that is not a positive finite number, and writes nothing."""
        with pytest.raises(ValueError, match="ttl"):
            await store.set_many({"a": 1}, ttl=ttl)
        assert await store.get_many(["a"]) == {}

    async def test_a_thousand_keys_round_trip(self, store: Store) -> None:
        """1,000 keys written by one set_many come back from one get_many, every value its own."""
        values = {f"k{n}": {"n": n} for n in range(1000)}
        await store.set_many(values, ttl=60)
        assert await store.get_many(values) == values
        assert await store.get("k999") == {"n": 999}

    async def test_many_keys_through_a_namespace(self, store: Store) -> None:
        """A namespace's set_many and get_many read and write its own keys, named without prefix."""
        view = store.namespace("ns")
        await view.set_many({"a": 1, "b": 2})
        await store.set("a", "root")
        assert await view.get_many(["a", "b", "c"]) == {"a": 1, "b": 2}
        assert await store.get_many(["a", "ns:a", "ns:b"]) == {"a": "root", "ns:a": 1, "ns:b": 2}


class TestScan:
    async def test_scan_yields_the_live_keys_under_the_prefix(self, store: Store) -> None:
        """scan yields every live key that starts with the prefix, and no other key."""
        await store.set_many({"user:1": 1, "user:2": 2, "users": 3, "usex": 4, "user": 5, "a": 6})
        await store.set("user:old", 1, ttl=0.05)
        await asyncio.sleep(0.15)
        assert sorted(await scanned(store, "user:")) == ["user:1", "user:2"]
        assert sorted(await scanned(store, "user")) == ["user", "user:1", "user:2", "users"]

    async def test_glob_characters_match_only_themselves(self, store: Store) -> None:
        """A prefix's * ? [ ] and backslash are plain characters, never patterns."""
        keys = ["a*b", "axb", "a?b", "ayb", "a[b]c", "abc", "a\\b", "a%b", "a_b", "azb"]
        await store.set_many(dict.fromkeys(keys, 1))
        for literal in ("a*", "a?", "a[b]", "a\\", "a%", "a_"):
            assert await scanned(store, literal) == [key for key in keys if key.startswith(literal)]

    async def test_small_batches_cover_every_key(self, store: Store) -> None:
        """1,234 keys scanned 100 at a time are each yielded, and nothing else is."""
        keys = {f"p:{n:05}" for n in range(1234)}
        await store.set_many(dict.fromkeys(keys, 0))
        await store.set("q:1", 0)
        found = await scanned(store, "p:", batch=100)
        assert set(found) == keys
        assert len(found) >= len(keys)

    async def test_empty_prefix_scans_every_key(self, store: Store) -> None:
        """scan("") yields every key, namespaced ones under their full name, and no lock."""
        await store.set("a", 1)
        await store.namespace("ns").set("b", 2)
        async with store.lock("held"):
            assert sorted(await scanned(store)) == ["a", "ns:b"]

    async def test_unicode_prefixes_are_ranges_of_characters(self, store: Store) -> None:
        """A prefix of any characters finds exactly the keys that start with it."""
        keys = ["é", "é1", "éz", "ê", "e", "東京:1", "東京:2", "東亰", "\U0010ffff", "\U0010ffffa"]
        await store.set_many(dict.fromkeys(keys, 1))
        for prefix in ("é", "東京:", "\U0010ffff", "\ud7ff"):
            assert sorted(await scanned(store, prefix)) == sorted(
                key for key in keys if key.startswith(prefix)
            )

    async def test_scan_through_a_namespace(self, store: Store) -> None:
        """A namespace's scan yields its own keys, named without its prefix."""
        view = store.namespace("ns")
        await view.set_many({"a:1": 1, "a:2": 2, "b": 3})
        await store.set("a:1", 0)
        assert sorted(await scanned(view, "a:")) == ["a:1", "a:2"]
        assert sorted(await scanned(view.namespace("a"))) == ["1", "2"]

    async def test_leaving_a_scan_early_holds_nothing(self, store: Store) -> None:
        """A hundred scans left after their first key leave the store serving as before."""
        await store.set_many({f"k{n}": n for n in range(10)})
        for _ in range(100):
            async for _key in store.scan("k", batch=2):
                break
        assert await store.get_many(["k0", "k9"]) == {"k0": 0, "k9": 9}

    @pytest.mark.parametrize("batch", [0, -1, MAX_SCAN_BATCH + 1, 1.5, True])
    async def test_bad_batch_is_refused(self, store: Store, batch: int) -> None:
        """A batch that is not a whole number from 1 to the maximum is refused at once."""
        with pytest.raises((TypeError, ValueError), match="batch"):
            await scanned(store, "", batch)


class TestClear:
    async def test_clear_deletes_the_prefix_and_counts_live_keys(self, store: Store) -> None:
        """clear deletes every key under the prefix, over many batches, and counts the live ones."""
        await store.set_many({f"c:{n}": n for n in range(1100)})
        await store.set_many({"c:old1": 1, "c:old2": 2}, ttl=0.05)
        await store.set_many({"c": 1, "d:1": 1, "cc": 1})
        await asyncio.sleep(0.15)
        assert await store.clear("c:") == 1100
        assert await scanned(store, "c:") == []
        assert await store.get_many(["c", "d:1", "cc", "c:0"]) == {"c": 1, "d:1": 1, "cc": 1}
        assert await store.clear("c:") == 0

    async def test_clear_of_a_namespace_leaves_the_rest(self, store: Store) -> None:
        """A namespace's clear() empties that namespace and nothing else; locks stay held."""
        view = store.namespace("ns")
        await view.set_many({"a": 1, "b": 2})
        await store.set_many({"a": 1, "nsx": 1})
        async with view.lock("l", timeout=30):
            assert await view.clear() == 2
            assert await store.clear() == 2
            with pytest.raises(LockTimeout):
                async with view.lock("l", wait=0):
                    pass
        assert await scanned(store) == []


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        ("", None),
        ("a", "b"),
        ("ab", "ac"),
        ("a\U0010ffff", "b"),
        ("\U0010ffff", None),
        ("\ud7ff", "\ue000"),
        ("é", "ê"),
    ],
)
def test_prefix_end_bounds_the_prefix(prefix: str, end: str | None) -> None:
    """The end of a prefix's range of strings is its last raisable character raised by one."""
    assert prefix_end(prefix) == end


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"", None), (b"a", b"b"), (b"a\xff", b"b"), (b"\xff\xff", None), (b"\x00", b"\x01")],
)
def test_bytes_end_bounds_the_prefix(prefix: bytes, end: bytes | None) -> None:
    """The end of a prefix's range of byte strings is its last raisable byte raised by one."""
    assert bytes_end(prefix) == end
