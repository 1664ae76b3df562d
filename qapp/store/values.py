"""What a store holds and how long: JSON values, ttls in seconds, integer deltas.

Values are JSON and nothing is ever pickled. ``ttl`` is a number of seconds,
fractions allowed, everywhere.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal, TypeAlias

from qapp.store.errors import InvalidValue

__all__ = [
    "JSONValue",
    "Scope",
    "check_delta",
    "check_seconds",
    "check_ttl",
    "dumps",
    "is_on",
    "lease_and_wait",
    "loads",
]

#: Any value that survives ``json.dumps``. Spelled ``Any`` so that callers'
#: precise types (``dict[str, int]``) pass without casts; the store checks at
#: run time instead. ``get`` returns it too, with None for a missing key.
JSONValue: TypeAlias = Any

#: Who sees a store's data: one process, one host, or every host.
Scope: TypeAlias = Literal["process", "host", "cluster"]


def dumps(value: JSONValue) -> str:
    """Encode ``value`` as compact JSON, refusing anything JSON cannot hold."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        # A lone surrogate ("\ud800") passes json.dumps but is no UTF-8: SQLite
        # and Redis failed on it (as a 503 and a 500) while memory kept it.
        # Refused here, every backend refuses it alike.
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidValue(f"value is not JSON: {exc}") from exc
    return text


def loads(raw: str | bytes) -> JSONValue:
    """Decode a value written by :func:`dumps`."""
    return json.loads(raw)


def check_ttl(ttl: float | None) -> float | None:
    """Return ``ttl`` if it is a positive, finite number of seconds (or None)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
    return float(ttl)


def lease_and_wait(timeout: float, wait: float | None) -> tuple[float, float]:
    """A lock's lease (``timeout``, checked) and how long to wait for it (``wait`` or the lease)."""
    lease = check_ttl(timeout)
    if lease is None:
        raise ValueError("a lock needs a lease")
    return lease, lease if wait is None else wait


def check_delta(delta: int) -> int:
    """Return ``delta`` if it is a plain integer."""
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise TypeError(f"delta must be an int, not {type(delta).__name__}")
    return delta


def check_seconds(name: str, value: float, *, zero: bool = False) -> float:
    """Return ``value``, a finite number of seconds above 0 (or at least 0 with ``zero``).

    Raises:
        TypeError: not a number; ValueError: out of range. Both name ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, not {value!r}")
    return float(value)


#: The words that switch a setting on, in a URL's parameters or an app's config.
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def is_on(value: object) -> bool:
    """A switch: ``1``, ``true``, ``yes`` and ``on`` (any case) are on, other strings off."""
    if isinstance(value, str):
        return value.strip().lower() in TRUE_WORDS
    return bool(value)
