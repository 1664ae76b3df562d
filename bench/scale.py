"""The cost curve: what one operation costs as a store grows from a thousand sessions to a million.

``python -m bench --scale`` grows one store of each kind (SQLite in a
temporary folder, a PostgreSQL and a redis-server of its own on free
loopback ports) through every size ``N`` asked for, with the library's own
``set_many``, to ``N`` sessions and ``N`` cache values
(:mod:`bench.scale_load`). At each size it measures, in process through
the store API, a fixed number of each operation at a fixed concurrency: a
session read, a cache ``get``, an atomic ``incr``; the bytes a session and
a cache value take; the time to fill. At the largest size it measures the
operations while expired rows are cleaned up (:mod:`bench.scale_sweep`).
:mod:`bench.scale_report` sets the figures against the targets and writes
them out. Speed is never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.scale_load import (
    PostgresProbe,
    Probe,
    RedisProbe,
    ScaleSettings,
    SQLiteProbe,
    Step,
    StoreName,
    grow,
    measure_each,
    operations,
)
from bench.scale_sweep import Sweep, sweep_phase
from qapp.state import open_store
from qapp.testing import PostgresServer, RedisServer


@dataclass
class Curve:
    """Everything measured on one store."""

    store: StoreName
    steps: list[Step] = field(default_factory=list)
    sweep: Sweep | None = None
    seconds: float = 0.0


@dataclass
class ScaleRun:
    """Everything one ``--scale`` run produced."""

    settings: ScaleSettings
    curves: list[Curve] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0


# --- one store, every size ---------------------------------------------------


@contextlib.contextmanager
def _server(name: StoreName, folder: Path) -> Iterator[str]:
    """The URL of a store of ``name``, its server started here and stopped afterwards."""
    if name == "sqlite":
        yield f"sqlite://{folder / 'scale.db'}"
    elif name == "redis":
        with RedisServer() as redis_server:
            yield redis_server.url
    else:
        # PostgreSQL's own defaults (every commit flushed), as python -m bench runs it.
        with PostgresServer(durable=True) as postgres:
            yield postgres.url


def _probe(name: StoreName, url: str, folder: Path) -> Probe:
    if name == "sqlite":
        return SQLiteProbe(folder / "scale.db")
    if name == "redis":
        return RedisProbe(url)
    return PostgresProbe(url)


async def curve(
    name: StoreName, url: str, folder: Path, settings: ScaleSettings, say: Callable[[str], None]
) -> Curve:
    """Grow one store through every size, measuring at each, then the sweep at the largest."""
    result = Curve(name)
    rng = random.Random(settings.seed)
    probe = _probe(name, url, folder)
    try:
        async with await open_store(url) as store:
            size = 0
            ops = operations(store, lambda: size)
            for target in sorted(set(settings.sizes)):
                step = await grow(store, probe, size, target)
                size = target
                step.ops = await measure_each(ops, settings, rng)
                result.steps.append(step)
                say(describe(name, step))
            if result.steps and settings.expired_share > 0:
                result.sweep = await sweep_phase(store, probe, result.steps[-1], settings)
                say(describe_sweep(name, result.sweep))
    finally:
        await probe.close()
    return result


def describe(name: StoreName, step: Step) -> str:
    """One line of progress for one size."""
    ops = "  ".join(
        f"{kind} p50 {s.p50_ms or 0:.2f} p99 {s.p99_ms or 0:.2f} ms" for kind, s in step.ops.items()
    )
    return (
        f"{name:<10} N={step.size:>9,}  fill {step.fill_seconds:6.1f} s "
        f"({step.rows_per_s:,.0f} rows/s)  {step.bytes_per_session:,.0f} B/session  {ops}"
    )


def describe_sweep(name: StoreName, sweep: Sweep) -> str:
    """One line of progress for the sweep phase."""
    ops = "  ".join(
        f"{kind} p99 {sweep.baseline[kind].p99_ms or 0:.2f} -> {s.p99_ms or 0:.2f} ms"
        for kind, s in sweep.during.items()
    )
    return (
        f"{name:<10} sweep: {sweep.removed:,} of {sweep.expired:,} expired rows by {sweep.how} "
        f"in {sweep.seconds:.1f} s  {ops}"
    )


def run_scale(settings: ScaleSettings, say: Callable[[str], None]) -> ScaleRun:
    """Measure every store of ``settings`` in turn, each on a server of its own."""
    result = ScaleRun(settings)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qapp-scale-") as tmp:
        for name in settings.stores:
            started = time.monotonic()
            with _server(name, Path(tmp)) as url:
                measured = asyncio.run(curve(name, url, Path(tmp), settings, say))
            measured.seconds = round(time.monotonic() - started, 1)
            result.curves.append(measured)
    result.seconds = round(time.monotonic() - began, 1)
    return result
