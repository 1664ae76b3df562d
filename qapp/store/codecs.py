"""How a cached value becomes JSON and comes back: exactly, or not at all.

A store holds JSON, and nothing is ever pickled. A cached function's value
goes through a codec on its way in and out:

- :class:`JSONCodec`, the default: the value must already be JSON, and must
  come back equal. A tuple would come back a list, a dict with int keys
  would come back with str keys, so they are refused with a :class:`TypeError`
  when the value is first stored, never silently changed.
- :class:`TypedCodec`: the function's declared return type (``codec="typed"``)
  or any type you name: dataclasses, datetimes, UUIDs, tuples, int-keyed
  dicts, msgspec Structs (through msgspec), and pydantic models (through
  pydantic's own JSON mode). The value is written as JSON and read back
  into that type, and a value that would not come back equal is refused.

The typed codec needs the ``typed`` extra (msgspec), and pydantic for models.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable
from typing import Any, Protocol

from qapp.store.extras import require
from qapp.store.values import JSONValue, dumps, loads

__all__ = ["Codec", "JSONCodec", "TypedCodec", "codec_for"]


class Codec(Protocol):
    """Turns a value into JSON and back."""

    def encode(self, value: Any) -> JSONValue:
        """The value as JSON, or :class:`TypeError` if it would not come back equal."""

    def decode(self, raw: JSONValue) -> Any:
        """The value that :meth:`encode` was given."""


class JSONCodec:
    """Values that are JSON already, kept only if they come back equal."""

    def __init__(self, name: str = "the value") -> None:
        self.name = name

    def encode(self, value: Any) -> JSONValue:
        back = loads(dumps(value))
        if back != value or _shape(back) != _shape(value):
            raise TypeError(
                f"{self.name} returned {_brief(value)}, which JSON would bring back as "
                f"{_brief(back)}; return JSON types, or keep the type with codec='typed'"
            )
        return value

    def decode(self, raw: JSONValue) -> Any:
        return raw


class TypedCodec:
    """Values of one type, written as JSON and read back into that type."""

    def __init__(self, type_: Any, name: str = "the value") -> None:
        self.type = type_
        self.name = name
        self._dump, self._load = _converters(type_)

    def encode(self, value: Any) -> JSONValue:
        try:
            raw = loads(dumps(self._dump(value)))
            back = self._load(raw)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{self.name}: {_brief(value)} is not a {self.type!r}: {exc}") from None
        if back != value:
            raise TypeError(
                f"{self.name} returned {_brief(value)}, which comes back as {_brief(back)} "
                f"as a {self.type!r}"
            )
        return raw

    def decode(self, raw: JSONValue) -> Any:
        return self._load(raw)


def codec_for(codec: Codec | str | None, func: Callable[..., Any], name: str) -> Codec:
    """The codec a ``cached`` function asked for: None or "json", "typed", or a codec."""
    if codec is None or codec == "json":
        return JSONCodec(name)
    if codec == "typed":
        try:
            hints = typing.get_type_hints(func)
        except NameError as exc:
            raise TypeError(
                f"{name}: its return type cannot be resolved ({exc}); "
                "name it: codec=TypedCodec(the type)"
            ) from None
        if "return" not in hints:
            raise TypeError(f"{name}: codec='typed' needs a return annotation")
        return TypedCodec(hints["return"], name)
    if isinstance(codec, str):
        raise ValueError(f"codec is 'json', 'typed' or a codec object, not {codec!r}")
    return codec


def _converters(type_: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """To JSON builtins and back, by pydantic for a type with models in it, else msgspec."""
    if _mentions_pydantic(type_):
        pydantic = importlib.import_module("pydantic")
        adapter = pydantic.TypeAdapter(type_)
        return (
            lambda v: adapter.dump_python(v, mode="json"),
            lambda raw: adapter.validate_python(raw),
        )
    require("typed", "the typed codec")
    msgspec = importlib.import_module("msgspec")

    def load(raw: Any) -> Any:
        try:
            return msgspec.convert(raw, type_, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from None

    return (lambda v: msgspec.to_builtins(v, str_keys=True), load)


def _mentions_pydantic(type_: Any) -> bool:
    """True if ``type_`` is, or contains, a pydantic model."""
    if any(c.__module__.startswith("pydantic") for c in getattr(type_, "__mro__", ())[1:]):
        return True
    return any(_mentions_pydantic(arg) for arg in typing.get_args(type_))


def _shape(value: Any) -> Any:
    """The container types of ``value``, all the way down: list and tuple are not alike."""
    if isinstance(value, dict):
        return ("dict", [(type(k), _shape(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_shape(v) for v in value])
    return type(value)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
