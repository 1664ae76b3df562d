"""The key of a call of a cached function: its name and its arguments as canonical JSON.

``f(1)`` and ``f(x=1)`` are one key: arguments are bound to the function's
signature, defaults applied, and written as JSON with sorted keys. Nothing
is ever pickled, so an argument that is not JSON is a :class:`TypeError`.

Two ways to take the key into the caller's hands: ``ignore`` names the
arguments left out of it (``self``, a pool, a client), and ``key`` is a
function of the call's arguments that returns the key's argument part
itself, as a string.

A call's *tags* end its key too: each tag has a random token in the store
(``t:<tag>``, none until the tag is first invalidated), and the key carries
the tokens it was made with, so invalidating a tag (a new token) makes every
key made with the old one unreachable at once, on every host, with nothing
to scan. The old entries expire in their time.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from qapp.store.interface import Store

__all__ = ["MAX_ARGS_IN_KEY", "MAX_TAG", "TAG_PREFIX", "CallKey", "Tags", "check_tags", "tagged"]

#: Arguments whose JSON is longer than this are named by its SHA-256 in the key.
MAX_ARGS_IN_KEY = 200


class CallKey:
    """Makes the keys of one function's calls: ``<name>:<arguments as JSON>``."""

    def __init__(
        self,
        func: Callable[..., Any],
        name: str,
        *,
        ignore: Iterable[str] = (),
        key: Callable[..., str] | None = None,
    ) -> None:
        self.name = name
        self._signature = inspect.signature(func)
        self.ignore = frozenset(ignore)
        unknown = self.ignore - set(self._signature.parameters)
        if unknown:
            raise ValueError(f"{name} has no argument {', '.join(sorted(unknown))} to ignore")
        self._custom = key

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The key of ``func(*args, **kwargs)``.

        Raises:
            TypeError: the arguments do not fit the function, or are not JSON.
        """
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}: {exc}") from None
        if self._custom is not None:
            made = self._custom(*args, **kwargs)
            if not isinstance(made, str):
                raise TypeError(f"the key function of {self.name} returned {made!r}, not a str")
            return f"{self.name}:{made}"
        bound.apply_defaults()
        arguments = {k: v for k, v in bound.arguments.items() if k not in self.ignore}
        try:
            text = json.dumps(
                arguments,
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
                allow_nan=False,
            )
            text.encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise TypeError(
                f"the arguments of {self.name} must be JSON to make its cache key "
                f"(nothing is pickled): {exc}; leave an argument out with ignore=[name], "
                "or give key=a function of the arguments"
            ) from None
        if len(text) > MAX_ARGS_IN_KEY:
            text = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
        return f"{self.name}:{text}"


#: Tags of a call: fixed names, or a function of the call's arguments that gives them.
Tags: TypeAlias = Iterable[str] | Callable[..., Iterable[str]]

#: The longest tag name.
MAX_TAG = 200

#: Where a tag's token lives, in the cached function's namespace.
TAG_PREFIX = "t:"


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags as a tuple of names: strings of 1 to :data:`MAX_TAG` printable characters."""
    checked = tuple(tags)
    for tag in checked:
        if not isinstance(tag, str) or not 0 < len(tag) <= MAX_TAG or not tag.isprintable():
            raise ValueError(f"a tag is 1 to {MAX_TAG} printable characters, not {tag!r}")
    return checked


async def tagged(store: Store, key: str, tags: tuple[str, ...]) -> str:
    """``key`` ended by the current tokens of ``tags`` in ``store`` (``key`` alone without tags)."""
    if not tags:
        return key
    tokens = await asyncio.gather(*(store.get(TAG_PREFIX + tag) for tag in tags))
    marks = ",".join(
        f"{tag}={token if isinstance(token, str) else ''}"
        for tag, token in zip(tags, tokens, strict=True)
    )
    return f"{key}#" + hashlib.sha256(marks.encode("utf-8")).hexdigest()[:32]
