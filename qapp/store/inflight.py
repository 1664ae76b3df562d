"""The bookkeeping of :mod:`qapp.store.flight`: what the store keeps, and one lookup in flight.

:class:`Entry` is a kept value with when it stops being fresh and how long
it took to make; :class:`Flight` is one lookup of a key in this worker,
shared by every call that asks meanwhile, and stopped when the last of them
goes away; :class:`Result` is what a caller gets back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Generic, TypeVar

from qapp.store.errors import LockTimeout
from qapp.store.values import JSONValue, dumps

__all__ = ["Entry", "Flight", "Found", "Result", "StillComputing", "Stopped"]

T = TypeVar("T")

#: Seconds the last caller to leave waits for the computation it stops to
#: let go of the lock, so that nobody has to sit out the lease.
STOP_GRACE = 5.0


class StillComputing(LockTimeout):
    """The value was still being computed elsewhere when the caller's wait ran out."""


@dataclass(frozen=True)
class Result(Generic[T]):
    """A value of a :class:`Cached` function, and where it came from."""

    value: T
    #: False only for the call whose computation produced the value: one
    #: call across all workers, per computation.
    cached: bool
    #: True if the value is past its ttl: served while it is recomputed in
    #: the background (or because that recomputation failed).
    stale: bool
    #: How many computations of this key there had been, across all
    #: workers, when this value was computed: its own number.
    computations: int


@dataclass(frozen=True)
class Entry:
    """What the store keeps for a key: the value as JSON, and when and how it was made."""

    value: JSONValue
    #: Wall-clock time (``time.time``) when the value stops being fresh.
    fresh_until: float
    #: Seconds its computation took: XFetch's delta.
    delta: float
    computations: int

    @classmethod
    def parse(cls, raw: JSONValue) -> Entry | None:
        """The entry stored as ``raw``; None if it is absent or not an entry."""
        if not isinstance(raw, dict) or not {"value", "fresh_until", "delta", "n"} <= set(raw):
            return None
        numbers = (raw["fresh_until"], raw["delta"])
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in numbers):
            return None
        if isinstance(raw["n"], bool) or not isinstance(raw["n"], int):
            return None
        return cls(raw["value"], float(raw["fresh_until"]), float(raw["delta"]), raw["n"])

    def as_json(self) -> dict[str, JSONValue]:
        return {
            "value": self.value,
            "fresh_until": self.fresh_until,
            "delta": self.delta,
            "n": self.computations,
        }


@dataclass(frozen=True)
class Found:
    """What one lookup found, shared by the callers of its flight; each decodes its own copy."""

    text: str
    cached: bool
    stale: bool
    computations: int

    @classmethod
    def of(cls, entry: Entry, *, cached: bool, stale: bool) -> Found:
        return cls(dumps(entry.value), cached, stale, entry.computations)


class Stopped(Exception):
    """The flight a call joined was stopped by its last caller leaving: join a new one."""


class Flight:
    """One lookup of one key in this worker, shared by every call that asks meanwhile."""

    def __init__(self, task: asyncio.Future[Found]) -> None:
        self.task = task
        self.callers = 0
        #: The answer that computed has been handed out (to one caller only).
        self.claimed = False
        #: Its callers all left and it is being stopped: nobody may join it.
        self.stopping = False

    async def join(self) -> Found:
        """The lookup's outcome; the last caller to be cancelled stops it.

        Raises:
            Stopped: the lookup was stopped under this caller, who was not
                cancelled itself (it joined as the last caller left).
        """
        self.callers += 1
        try:
            found = await asyncio.shield(self.task)
        except asyncio.CancelledError:
            self.callers -= 1
            me = asyncio.current_task()
            if me is not None and me.cancelling() == 0:
                raise Stopped from None
            if self.callers == 0 and not self.task.done():
                # Nobody wants the value any more (every client went away):
                # stop the work, and let it free the lock before we go, so
                # that the next caller need not sit out the lease.
                self.stopping = True
                self.task.cancel()
                await asyncio.wait({self.task}, timeout=STOP_GRACE)
            raise
        except BaseException:
            self.callers -= 1
            raise
        self.callers -= 1
        if not found.cached:
            if self.claimed:
                found = dataclasses.replace(found, cached=True)
            self.claimed = True
        return found
