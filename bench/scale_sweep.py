"""The cost curve's last phase: the operations while a store cleans up expired rows.

At the largest size, a share of expired sessions more is written, timed to
run out together just after a baseline of the operations (a third of each,
interleaved) is measured with them still alive. Then the same operations
run while they are cleaned up: on SQLite and PostgreSQL by the store's own
``store.sweep()`` (batches sized to take about 2 ms each, with a rest as
long as the statement between them), on Redis by its own active expiry,
which needs nothing from the client and is watched through ``DBSIZE``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.scale_load import (
    OpStats,
    Probe,
    RedisProbe,
    ScaleSettings,
    Step,
    drive,
    fill_sessions,
    operations,
    stats_of,
)
from qapp.state import Store
from qapp.store.backends.sweep import SweepCounts


@dataclass
class Sweep:
    """The operations at the largest size before and while expired rows are cleaned up."""

    size: int
    expired: int
    #: What cleaned up: "store.sweep()" or "active expiry".
    how: str
    fill_seconds: float
    #: Seconds the cleanup ran (or, for a cap, was watched) and rows it removed meanwhile.
    seconds: float
    removed: int
    #: True when the expired rows began to expire before the baseline was done.
    baseline_overlapped: bool
    baseline: dict[str, OpStats] = field(default_factory=dict)
    during: dict[str, OpStats] = field(default_factory=dict)


# --- the sweep ---------------------------------------------------------------


def _swept_rows(store: Store) -> int:
    """Rows every sweep of this store object has deleted (SQLite, PostgreSQL), else 0."""
    counts = getattr(store, "sweeps", None)
    return counts.rows if isinstance(counts, SweepCounts) else 0


async def sweep_phase(store: Store, probe: Probe, step: Step, settings: ScaleSettings) -> Sweep:
    """Expired sessions at the largest size: the operations before and while they go."""
    rng = random.Random(settings.seed + 1)
    size, expired = step.size, int(step.size * settings.expired_share)
    ops = operations(store, lambda: size)
    mixed = len(ops) * settings.ops
    # They must all be alive through the baseline, then run out together:
    # the deadline is estimated from this store's own rates at this size,
    # with room for a fill up to three times slower than the step's (on a
    # shared machine it was up to twice), lest a sweep run in the baseline.
    fill_guess = expired / max(step.rows_per_s, 1.0)
    baseline_guess = sum(settings.ops / (s.ops_per_s or 1.0) for s in step.ops.values())
    deadline = time.time() + 3.0 * (fill_guess + baseline_guess) + 2.0
    last = deadline

    def ttl() -> float:
        nonlocal last
        left = max(deadline - time.time(), 0.5)
        last = max(last, time.time() + left)
        return left

    filling = time.perf_counter()
    await fill_sessions(store, 0, expired, kind=b"dead", ttl=ttl)
    fill_seconds = time.perf_counter() - filling
    samples, seconds = await drive(ops, mixed, settings.concurrency, rng)
    overlapped = time.time() >= deadline
    baseline = stats_of(samples, seconds)
    if isinstance(probe, RedisProbe):
        keys = await probe.keys()
        await asyncio.sleep(max(0.0, deadline - time.time()))
        watch = asyncio.create_task(_active_expiry(probe, keys, expired, settings.sweep_cap))
        how = "active expiry"
    else:
        await asyncio.sleep(max(0.0, last - time.time()) + 0.05)
        rows = _swept_rows(store)
        watch = asyncio.create_task(_timed_sweep(store, rows))
        how = "store.sweep()"
    began = time.perf_counter()

    def go_on() -> bool:
        return not watch.done() and time.perf_counter() - began < settings.sweep_cap

    samples, seconds = await drive(ops, 10**9, settings.concurrency, rng, go_on=go_on)
    took, removed = await watch
    return Sweep(
        size=size,
        expired=expired,
        how=how,
        fill_seconds=round(fill_seconds, 2),
        seconds=round(took, 2),
        removed=removed,
        baseline_overlapped=overlapped,
        baseline=baseline,
        during=stats_of(samples, seconds),
    )


async def _timed_sweep(store: Store, rows_before: int) -> tuple[float, int]:
    """Run the store's own sweep to its end: its seconds, and the rows every sweep deleted."""
    sweep: Callable[[], Awaitable[int]] = getattr(store, "sweep")  # noqa: B009
    began = time.perf_counter()
    await sweep()
    return time.perf_counter() - began, _swept_rows(store) - rows_before


async def _active_expiry(
    probe: RedisProbe, keys: int, expired: int, cap: float
) -> tuple[float, int]:
    """Watch Redis delete expired keys by itself, until all are gone or ``cap`` seconds passed.

    Keys that nobody reads are deleted only by Redis's background cycle,
    which samples keys with a ttl a few times a second; what it manages in
    ``cap`` seconds is what is reported.
    """
    began = time.perf_counter()
    while True:
        now, removed = time.perf_counter() - began, keys - await probe.keys()
        if removed >= expired or now >= cap:
            return now, removed
        await asyncio.sleep(0.1)
