"""The key of a call of a cached function: its name and its arguments as canonical JSON.

``f(1)`` and ``f(x=1)`` are one key: arguments are bound to the function's
signature, defaults applied, and written as JSON with sorted keys. Nothing
is ever pickled, so an argument that is not JSON is a :class:`TypeError`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MAX_ARGS_IN_KEY", "CallKey"]

#: Arguments whose JSON is longer than this are named by its SHA-256 in the key.
MAX_ARGS_IN_KEY = 200


class CallKey:
    """Makes the keys of one function's calls: ``<name>:<arguments as JSON>``."""

    def __init__(self, func: Callable[..., Any], name: str) -> None:
        self.name = name
        self._signature = inspect.signature(func)

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The key of ``func(*args, **kwargs)``.

        Raises:
            TypeError: the arguments do not fit the function, or are not JSON.
        """
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}: {exc}") from None
        bound.apply_defaults()
        try:
            text = json.dumps(
                bound.arguments,
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
                allow_nan=False,
            )
            text.encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise TypeError(
                f"the arguments of {self.name} must be JSON to make its cache key "
                f"(nothing is pickled): {exc}"
            ) from None
        if len(text) > MAX_ARGS_IN_KEY:
            text = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
        return f"{self.name}:{text}"
