"""Typed values that round-trip: codecs for ``cached``, on every backend (real servers)."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass

import msgspec
import pydantic
import pytest

from qapp.state import Store
from qapp.store.codecs import TypedCodec
from qapp.store.flight import cached

WHEN = datetime.datetime(2026, 12, 4, 18, 0, 0, 123456, tzinfo=datetime.UTC)
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


@dataclass(frozen=True)
class Invoice:
    number: int
    issued: datetime.datetime
    customer: uuid.UUID
    lines: tuple[str, ...]


class Account(pydantic.BaseModel):
    name: str
    opened: datetime.date
    limits: dict[int, float]


class Point(msgspec.Struct, frozen=True):
    x: int
    y: int


async def invoice(number: int) -> Invoice:
    return Invoice(number, WHEN, ID, ("tea", "cake"))


async def account(name: str) -> Account:
    return Account(name=name, opened=datetime.date(2026, 1, 2), limits={1: 10.5, 2: 20.0})


async def corner() -> tuple[Point, Point]:
    return (Point(0, 0), Point(3, 4))


async def test_dataclass_round_trips_exactly(store: Store) -> None:
    """A dataclass with a datetime, a UUID and a tuple comes back equal, and typed alike."""
    fetch = cached(store, ttl=60, codec="typed")(invoice)
    first = await fetch.get_with_info(7)
    second = await fetch.get_with_info(7)
    assert (first.cached, second.cached) == (False, True)
    assert second.value == first.value == Invoice(7, WHEN, ID, ("tea", "cake"))
    assert isinstance(second.value.customer, uuid.UUID)
    assert isinstance(second.value.lines, tuple)


async def test_pydantic_model_round_trips_exactly(store: Store) -> None:
    """A pydantic model with a date and int dict keys comes back equal, and typed alike."""
    fetch = cached(store, ttl=60, codec="typed")(account)
    await fetch("ada")
    info = await fetch.get_with_info("ada")
    assert info.cached is True
    assert isinstance(info.value, Account)
    assert info.value.limits == {1: 10.5, 2: 20.0}
    assert info.value.opened == datetime.date(2026, 1, 2)


async def test_tuple_of_structs_round_trips(store: Store) -> None:
    """A tuple of msgspec Structs comes back a tuple of Structs."""
    fetch = cached(store, ttl=60, codec="typed")(corner)
    await fetch()
    info = await fetch.get_with_info()
    assert info.cached is True
    assert info.value == (Point(0, 0), Point(3, 4))
    assert isinstance(info.value, tuple)


@pytest.mark.parametrize("value", [(1, 2), {1: "a"}, [(1, 2)]])
async def test_json_codec_refuses_what_json_would_change(store: Store, value: object) -> None:
    """By default a tuple or an int-keyed dict is refused when first stored, and not kept."""
    runs = 0

    async def shaped() -> object:
        nonlocal runs
        runs += 1
        return value

    fetch = cached(store, ttl=60)(shaped)
    for _ in range(2):
        with pytest.raises(TypeError, match="codec='typed'"):
            await fetch()
    assert runs == 2
    assert await fetch.computations() == 0  # refused before anything was counted or kept


async def test_typed_codec_refuses_a_value_of_another_type(store: Store) -> None:
    """A value that does not fit the declared type is a TypeError, and nothing is kept."""

    async def count() -> int:
        return "seven"  # type: ignore[return-value]

    fetch = cached(store, ttl=60, codec=TypedCodec(int, "count"))(count)
    with pytest.raises(TypeError, match="count"):
        await fetch()
    assert await store.namespace("cached").get("v:" + fetch.key()) is None


async def test_typed_codec_needs_a_return_type(store: Store) -> None:
    """codec='typed' on a function without a return annotation says so."""

    async def bare():  # type: ignore[no-untyped-def]
        return 1

    fetch = cached(store, ttl=60, codec="typed")(bare)
    with pytest.raises(TypeError, match="needs a return annotation"):
        await fetch()


def test_unknown_codec_name_is_refused(store: Store) -> None:
    """A codec named by a string other than json or typed is a ValueError."""
    fetch = cached(store, ttl=60, codec="pickle")(invoice)
    with pytest.raises(ValueError, match="codec is 'json', 'typed'"):
        _ = fetch.codec
