"""Run the whole benchmark: start every server, drive every route, stop everything.

One run, in this order, for each worker count:

1. qapp under hypercorn (the repository's ``hypercorn.toml``) on SQLite,
   then on Redis: every route at the normal connection count, then
   ``/health`` and the atomic counter at the high one;
2. the Flask peer under gunicorn (gthread) on the same Redis, with the same
   worker count and wrk settings, on the routes it shares.

Then the stores' ceilings. Every server is a child started here on a free
loopback port, inside one ``ExitStack``: Ctrl-C, SIGTERM or an error stops
them all (hypercorn's parent gets SIGTERM alone, so workers shut down cleanly).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Literal, TypeAlias

from bench import ceilings
from bench.routes import PEER_ROUTES, ROUTES, Route, prepare
from bench.wrk import BenchError, Load, WrkResult, run_wrk
from qapp.servers import HypercornServer, RedisServer

StoreName: TypeAlias = Literal["sqlite", "redis"]
ServerName: TypeAlias = Literal["qapp", "peer"]

#: Routes loaded at the high connection count too.
HIGH_ROUTES = ("health", "atomic")


@dataclass(frozen=True)
class Settings:
    """What to run, from the command line."""

    workers: tuple[int, ...] = (1, 2)
    stores: tuple[StoreName, ...] = ("sqlite", "redis")
    routes: tuple[str, ...] = tuple(ROUTES)
    connections: int = 64
    #: The connection count where a thread pool runs out; 0 skips it.
    high_connections: int = 1000
    duration: float = 5.0
    warmup: float = 1.0
    threads: int = 2
    peer: bool = True
    peer_threads: int = 8
    ceilings: bool = True

    def load(self, connections: int) -> Load:
        return Load(connections, self.duration, self.warmup, self.threads)


@dataclass
class Measurement:
    """One route on one server at one load: its numbers, or why there are none."""

    server: ServerName
    workers: int
    store: StoreName
    route: str
    label: str
    connections: int
    result: WrkResult | None = None
    #: Why the route could not be measured (not built yet, say).
    unavailable: str | None = None


@dataclass
class Run:
    """Everything one run produced."""

    settings: Settings
    measurements: list[Measurement] = field(default_factory=list)
    ceilings: list[ceilings.Ceiling] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0

    def find(
        self, server: ServerName, workers: int, store: StoreName, route: str, connections: int
    ) -> Measurement | None:
        for m in self.measurements:
            if (m.server, m.workers, m.store, m.route, m.connections) == (
                server,
                workers,
                store,
                route,
                connections,
            ):
                return m
        return None


def say(message: str) -> None:
    """Progress goes to stderr, so stdout stays free for the summary."""
    print(message, file=sys.stderr, flush=True)


def describe(m: Measurement) -> str:
    where = f"{m.server:<4} w={m.workers} {m.store:<6} c={m.connections:<5} {m.label:<26}"
    if m.result is None:
        return f"{where} unavailable: {m.unavailable}"
    r = m.result
    return (
        f"{where} {r.rps:>9,.0f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms"
        f"  non-2xx {r.non_2xx}  socket errors {sum(r.socket_errors.values())}"
    )


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so that cleanup runs either way."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _measure(
    run: Run,
    base_url: str,
    server: ServerName,
    workers: int,
    store: StoreName,
    routes: Sequence[Route],
    report: Callable[[Measurement], None],
) -> None:
    settings = run.settings
    for route in routes:
        headers, unavailable = prepare(base_url, route)
        counts = [settings.connections]
        if settings.high_connections and route.name in HIGH_ROUTES:
            counts.append(settings.high_connections)
        for connections in counts:
            m = Measurement(server, workers, store, route.name, route.label, connections)
            if unavailable is not None:
                m.unavailable = unavailable
            else:
                m.result = run_wrk(
                    base_url + route.path,
                    settings.load(connections),
                    method=route.method,
                    headers=headers,
                )
            run.measurements.append(m)
            report(m)


def run(settings: Settings, report: Callable[[Measurement], None] | None = None) -> Run:
    """Run the benchmark described by ``settings`` and return what it measured."""
    report = report or (lambda m: say(describe(m)))
    unknown = set(settings.routes) - set(ROUTES)
    if unknown:
        raise BenchError(f"unknown routes {sorted(unknown)}; known: {', '.join(ROUTES)}")
    routes = [ROUTES[name] for name in settings.routes]
    result = Run(settings)
    began = time.monotonic()
    with (
        _sigterm_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="qapp-bench-") as tmp,
        RedisServer() as redis,
    ):
        folder = Path(tmp)
        urls: dict[StoreName, str] = {
            "sqlite": f"sqlite://{folder / 'bench.db'}",
            "redis": redis.url,
        }
        for workers in settings.workers:
            for store in settings.stores:
                env = {
                    "QAPP_STORE_URL": urls[store],
                    "QAPP_INSTANCE_PATH": str(folder / "instance"),
                }
                say(f"-- qapp: hypercorn, {workers} worker(s), {store}")
                with HypercornServer(workers=workers, env=env) as server:
                    _measure(result, server.url, "qapp", workers, store, routes, report)
            peer_routes = [r for r in routes if r.name in PEER_ROUTES]
            if settings.peer and peer_routes:
                from bench.peers.server import GunicornServer

                say(f"-- peer: Flask on gunicorn gthread, {workers}×{settings.peer_threads}")
                with GunicornServer(
                    redis_url=redis.url, workers=workers, threads=settings.peer_threads
                ) as peer:
                    _measure(result, peer.url, "peer", workers, "redis", peer_routes, report)
        if settings.ceilings:
            say("-- store ceilings")
            result.ceilings.append(ceilings.redis_incr(redis.port, settings.connections))
            result.ceilings.append(ceilings.sqlite_upsert(folder, settings.duration))
            for c in result.ceilings:
                say(f"{c.name:<14} {c.ops_per_s or 0:>9,.0f} ops/s  ({c.reason or c.how})")
    result.seconds = round(time.monotonic() - began, 1)
    return result
