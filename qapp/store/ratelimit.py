"""Rate limits on a store: "5/minute", exact for everyone who shares the store.

No web framework here: :func:`count` counts one event against a limit and
says whether it is allowed, using only the store's atomic ``incr`` (and
``get``), so it works alike on every backend and across workers and hosts
that share the store (on ``memory://`` the count is per process).

Two strategies, both with one counter per window of the limit's period,
aligned on the epoch so that every host agrees (``<key>:<window number>``):

``"sliding"`` (:func:`hit_sliding`, the default of the route decorator)
    The count is an estimate over the last period: the previous window's
    count weighted by the part of it still inside the period, plus the
    current window's. An event increments the current window atomically,
    and if the estimate is then over the limit it takes its increment back
    and is refused: a refused event is not counted, and concurrent events
    can never let more than the limit through, since each sees a distinct
    value of the counter. A burst of N at the end of one window and N at
    the start of the next is let through once, not twice. The estimate
    assumes the previous window's events were spread evenly: N events at
    its very end and then a steady trickle can still reach up to 2N in one
    period spread over most of it, never at one boundary.

``"fixed"`` (:func:`hit`)
    One counter per window; an event is allowed if the counter's new value
    is at most the limit. A refused event is counted too: retrying early
    does not help. The price of its simplicity: N at the end of one window
    and N at the start of the next are both let through.

An event counted and then found not to matter (a login that succeeded,
when only failures should count) is given back with :func:`refund`, in the
window it was counted in, whatever the strategy.

Every key one limit touches is ``<key>:<window>``: with a hash tag in
``key`` (``{user:7}``) they share a Redis Cluster slot, though no command
here needs that, since each touches one key.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Literal

from qapp.store.errors import ConfigurationError
from qapp.store.interface import Store

__all__ = [
    "STRATEGIES",
    "Limit",
    "Strategy",
    "Verdict",
    "count",
    "hit",
    "hit_sliding",
    "parse_limit",
    "parse_limits",
    "refund",
]

#: How a limit counts: see the module's docstring.
Strategy = Literal["sliding", "fixed"]
STRATEGIES: tuple[Strategy, ...] = ("sliding", "fixed")

#: Seconds in each period a limit string may name.
PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}

_LIMIT = re.compile(r"\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day)s?\s*")


@dataclass(frozen=True)
class Limit:
    """At most ``count`` events per ``period`` seconds."""

    count: int
    period: float

    def __str__(self) -> str:
        return f"{self.count};w={self.period:g}"

    @property
    def name(self) -> str:
        """A short name that tells limits apart, e.g. ``"5/60s"`` (counter keys, headers)."""
        return f"{self.count}/{self.period:g}s"


@dataclass(frozen=True)
class Verdict:
    """What :func:`count` decided, with what a client needs to know about the limit."""

    allowed: bool
    limit: Limit
    #: Events left now, after this one.
    remaining: int
    #: Seconds until the count starts again (fixed), or until the next event
    #: would be allowed when none is left (sliding).
    reset: float
    #: The counter this event was counted in (its window's key in the store).
    counter: str = ""
    #: How many events of this one stay counted, for :func:`refund` (0: none).
    counted: int = 1
    strategy: Strategy = "fixed"
    #: The other limits counted with this one (by one check of several limits).
    also: tuple[Verdict, ...] = ()

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait before trying again (at least 1)."""
        return max(1, math.ceil(self.reset))


def parse_limit(text: str | Limit) -> Limit:
    """``"5/minute"``, ``"100 per hour"`` or ``"10/30 seconds"`` as a :class:`Limit`.

    Raises:
        ConfigurationError: the text is not a limit.
    """
    if isinstance(text, Limit):
        return text
    match = _LIMIT.fullmatch(text) if isinstance(text, str) else None
    if match is None or int(match[1]) < 1:
        raise ConfigurationError(f"not a rate limit: {text!r} (try '5/minute')")
    multiple = int(match[2] or 1)
    return Limit(int(match[1]), float(multiple * PERIODS[match[3]]))


def parse_limits(text: str | Limit | tuple[Limit, ...]) -> tuple[Limit, ...]:
    """``"10/second;100/minute"`` (``;`` or ``,`` between them) as one :class:`Limit` each.

    Raises:
        ConfigurationError: a part is not a limit, or there is none.
    """
    if isinstance(text, Limit):
        return (text,)
    if isinstance(text, tuple):
        return text
    if not isinstance(text, str):
        raise ConfigurationError(f"not a rate limit: {text!r} (try '5/minute')")
    parts = [part for part in re.split(r"[;,]", text) if part.strip()]
    if not parts:
        raise ConfigurationError(f"not a rate limit: {text!r} (try '5/minute')")
    return tuple(parse_limit(part) for part in parts)


async def hit(store: Store, key: str, limit: Limit, cost: int = 1) -> Verdict:
    """Count ``cost`` events for ``key`` in a fixed window and say whether they are within.

    ``store`` is usually a namespace of its own (``store.namespace("ratelimit")``).
    """
    now = time.time()
    window = math.floor(now / limit.period)
    reset = (window + 1) * limit.period - now
    counter = f"{key}:{window}"
    value = await store.incr(counter, cost, ttl=limit.period)
    return Verdict(
        allowed=value <= limit.count,
        limit=limit,
        remaining=max(0, limit.count - value),
        reset=reset,
        counter=counter,
        counted=cost,
    )


def _as_int(value: object) -> int:
    """A counter's value as read back with ``get`` (absent: 0)."""
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int | float | str):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def _wait(limit: Limit, previous: int, current: int, elapsed: float, cost: int) -> float:
    """Seconds until ``cost`` more events fit the sliding estimate, from ``elapsed`` (0..1).

    ``current`` is this window's count without them. The estimate falls as
    the previous window slides out; after this window ends, this window is
    the one sliding out.
    """
    room = limit.count - cost - current
    if room >= 0:
        if previous <= 0:
            return 0.0
        return max(0.0, (1 - room / previous) - elapsed) * limit.period
    later = 1 - (limit.count - cost) / current if current > 0 else 0.0
    return (1 - elapsed + max(0.0, later)) * limit.period


async def hit_sliding(store: Store, key: str, limit: Limit, cost: int = 1) -> Verdict:
    """Count ``cost`` events for ``key`` in a sliding window; a refused event is not counted.

    Exact under concurrency: the increment is atomic, and an event whose
    increment takes the estimate over the limit takes it back.
    """
    if cost > limit.count:
        raise ValueError(f"a cost of {cost} can never fit {limit.name}")
    now = time.time()
    window = math.floor(now / limit.period)
    elapsed = now / limit.period - window
    counter = f"{key}:{window}"
    # The previous window is closed: only take-backs and refunds still change it.
    previous = _as_int(await store.get(f"{key}:{window - 1}"))
    weight = previous * (1 - elapsed)
    value = await store.incr(counter, cost, ttl=2 * limit.period)
    estimate = weight + value
    if estimate <= limit.count:
        remaining = max(0, math.floor(limit.count - estimate))
        reset = (
            _wait(limit, previous, value, elapsed, 1)
            if remaining == 0
            else (1 - elapsed) * limit.period
        )
        return Verdict(True, limit, remaining, reset, counter, cost, "sliding")
    await store.incr(counter, -cost, ttl=2 * limit.period)
    wait = _wait(limit, previous, value - cost, elapsed, cost)
    return Verdict(False, limit, 0, wait, counter, 0, "sliding")


async def count(
    store: Store, key: str, limit: Limit, cost: int = 1, strategy: Strategy = "sliding"
) -> Verdict:
    """Count ``cost`` events for ``key`` against ``limit`` with ``strategy``."""
    if strategy == "sliding":
        return await hit_sliding(store, key, limit, cost)
    if strategy == "fixed":
        return await hit(store, key, limit, cost)
    raise ConfigurationError(f"unknown rate limit strategy {strategy!r}: use 'sliding' or 'fixed'")


async def refund(store: Store, verdict: Verdict, cost: int = 1) -> None:
    """Take back ``cost`` events that :func:`count` counted for ``verdict``, in their window.

    At most what the verdict counted is taken back (a refused sliding event
    counted nothing). The window may have ended since: its counter then
    weighs less or nothing, and the refund changes only what still counts.
    """
    amount = min(cost, verdict.counted)
    if amount <= 0 or not verdict.counter:
        return
    ttl = verdict.limit.period * (2 if verdict.strategy == "sliding" else 1)
    await store.incr(verdict.counter, -amount, ttl=ttl)
