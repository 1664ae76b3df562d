"""Rate limits on a store: "5/minute", exact for everyone who shares the store.

No web framework here: :func:`hit` counts one event against a limit and
says whether it is allowed, using only the store's atomic ``incr``.

The algorithm is a fixed window: time is cut into windows of the limit's
period, aligned on the epoch so that every host agrees, and each window has
one counter (``<key>:<window number>``) created with a ttl of the period.
An event is allowed if the counter's new value is at most the limit. The
increment is atomic on every backend, so a limit of N lets exactly N
events through per window, never N+1, however many workers and hosts
count (on ``memory://`` the count is per process, so each worker allows
its own N). A refused event is counted too: retrying early does not help.
An event counted and then found not to matter (a login that succeeded,
when only failures should count) is given back with :func:`refund`, in the
window it was counted in.

The window is the price of exactness with one atomic operation: a client
can spend N at the end of one window and N more at the start of the next.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from qapp.store.errors import ConfigurationError
from qapp.store.interface import Store

__all__ = ["Limit", "Verdict", "hit", "parse_limit", "refund"]

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


@dataclass(frozen=True)
class Verdict:
    """What :func:`hit` decided, with what a client needs to know about the limit."""

    allowed: bool
    limit: Limit
    #: Events left in this window after this one.
    remaining: int
    #: Seconds until the window ends and the count starts again.
    reset: float
    #: The counter this event was counted in (its window's key in the store).
    counter: str = ""

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


async def hit(store: Store, key: str, limit: Limit, cost: int = 1) -> Verdict:
    """Count one event for ``key`` (``cost`` of them) and say whether it is within ``limit``.

    ``store`` is usually a namespace of its own (``store.namespace("ratelimit")``).
    """
    now = time.time()
    window = math.floor(now / limit.period)
    reset = (window + 1) * limit.period - now
    counter = f"{key}:{window}"
    count = await store.incr(counter, cost, ttl=limit.period)
    return Verdict(
        allowed=count <= limit.count,
        limit=limit,
        remaining=max(0, limit.count - count),
        reset=reset,
        counter=counter,
    )


async def refund(store: Store, verdict: Verdict, cost: int = 1) -> None:
    """Take back ``cost`` events that :func:`hit` counted for ``verdict``, in their window.

    The window may have ended since: its counter is then no longer read,
    and the refund changes nothing that counts.
    """
    await store.incr(verdict.counter, -cost, ttl=verdict.limit.period)
