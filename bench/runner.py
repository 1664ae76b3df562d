"""Run the whole benchmark: start every server, drive every route, stop everything.

For each worker count, every server is started at once and left up:
qapp under hypercorn and under granian (``qapp serve`` with the repository's
``hypercorn.toml``, ``--server granian`` for the fast path) on SQLite, on
Redis and on PostgreSQL, the fast path once more with ``/metrics`` on (what counting costs),
and on the same Redis the peers: Flask under gunicorn (gthread), FastAPI
under uvicorn, and a bare ASGI function under granian and under hypercorn
(``qapp serve`` with its defaults), the ceiling of any framework on each
server. The peers' cached value, session and user are written into Redis
first, so that their routes make qapp's store calls with no setup. Idle
servers cost next to nothing, and this lets each route be driven on every
server back to back, so that the ratios compare runs seconds apart. On a
shared machine whose load drifts, that matters more than anything else.
``repeat`` rounds of all that give a median per cell.

Then the stores' ceilings. PostgreSQL runs with its own defaults (every
commit flushed to disk), as a team's database would; Redis and SQLite with
the settings their stores use. Every server is a child started here on a free
loopback port, inside one ``ExitStack``: Ctrl-C, SIGTERM or an error stops
them all (hypercorn's parent gets SIGTERM alone, so workers shut down cleanly).
"""

from __future__ import annotations

import contextlib
import functools
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Literal, TypeAlias

from bench import ceilings
from bench.cpu import tree_cpu_seconds
from bench.routes import (
    CACHE_KEY,
    CACHE_VALUE,
    FLASK_ROUTES,
    PEER_ROUTES,
    ROUTES,
    Route,
    prepare,
    refresh_state,
)
from bench.wrk import BenchError, Load, WrkResult, run_wrk
from qapp.testing import HypercornServer, PostgresServer, RedisServer

StoreName: TypeAlias = Literal["sqlite", "redis", "postgresql"]
#: Every store the bench knows, in the order it runs them.
STORES: tuple[StoreName, ...] = ("sqlite", "redis", "postgresql")
#: qapp on hypercorn, on granian, on granian with /metrics on; the Flask peer,
#: the FastAPI peer, and the bare-ASGI ceiling on granian and on hypercorn.
ServerName: TypeAlias = Literal[
    "qapp",
    "qapp-granian",
    "qapp-granian-metrics",
    "peer",
    "fastapi",
    "ceiling",
    "ceiling-hypercorn",
]
#: The HTTP servers qapp runs on (``qapp serve --server``).
QappServer: TypeAlias = Literal["hypercorn", "granian"]
#: qapp's name in the results on each HTTP server.
QAPP_SERVERS: dict[QappServer, ServerName] = {"hypercorn": "qapp", "granian": "qapp-granian"}
#: The fast path with /metrics on: measured on the atomic route only.
METERED: ServerName = "qapp-granian-metrics"
#: Servers that are not qapp: they serve PEER_ROUTES only (Flask: FLASK_ROUTES).
PEERS: tuple[ServerName, ...] = ("peer", "fastapi", "ceiling", "ceiling-hypercorn")
#: Each qapp server's bare-ASGI ceiling: the same server with no framework.
CEILING_OF: dict[ServerName, ServerName] = {
    "qapp": "ceiling-hypercorn",
    "qapp-granian": "ceiling",
}

#: Routes loaded at the high connection count too.
HIGH_ROUTES = ("health", "atomic", "cache-get", "session-read", "me")


@dataclass(frozen=True)
class Settings:
    """What to run, from the command line."""

    workers: tuple[int, ...] = (1, 2)
    stores: tuple[StoreName, ...] = STORES
    routes: tuple[str, ...] = tuple(ROUTES)
    connections: int = 64
    #: The connection count where a thread pool runs out; 0 skips it.
    high_connections: int = 1000
    duration: float = 5.0
    warmup: float = 1.0
    threads: int = 2
    #: The HTTP servers qapp is measured on.
    servers: tuple[QappServer, ...] = ("hypercorn", "granian")
    #: The peers (Flask, FastAPI) and the bare-ASGI ceilings.
    peer: bool = True
    #: The Flask peer among them.
    flask: bool = True
    #: The fast path's atomic route once more with /metrics on.
    metrics_cost: bool = True
    peer_threads: int = 8
    ceilings: bool = True
    #: Rounds over every route and server; each cell reports its median run.
    repeat: int = 1

    def load(self, connections: int) -> Load:
        return Load(connections, self.duration, self.warmup, self.threads)


@dataclass(frozen=True)
class Refreshes:
    """How often a ``cached`` route computed its value during one run, and against what."""

    computations: int
    #: Seconds between the reads before and after the run (warm-up included).
    seconds: float
    #: Seconds the value stays fresh, and seconds one computation takes.
    ttl: float
    work: float

    @property
    def per_expiry(self) -> float:
        """Computations per ``ttl`` of the run: 1 means one per expiry."""
        expiries = self.seconds / self.ttl
        return round(self.computations / expiries, 2) if expiries > 0 else 0.0


@dataclass
class Measurement:
    """One route on one server at one load: its numbers, or why there are none."""

    server: ServerName
    workers: int
    store: StoreName
    route: str
    label: str
    connections: int
    #: Every round's run, in order.
    runs: list[WrkResult] = field(default_factory=list)
    #: Why the route could not be measured (not built yet, say).
    unavailable: str | None = None
    #: For a ``counts_refreshes`` route: every round's computations, in order.
    refreshes: list[Refreshes] = field(default_factory=list)

    @property
    def result(self) -> WrkResult | None:
        """The run with the median req/s, so that its latencies belong to it."""
        if not self.runs:
            return None
        ranked = sorted(self.runs, key=lambda r: r.rps)
        return ranked[(len(ranked) - 1) // 2]

    @property
    def refresh(self) -> Refreshes | None:
        """The computations of the median run (:attr:`result`), for a refreshing route."""
        result = self.result
        if result is None or len(self.refreshes) != len(self.runs):
            return None
        return self.refreshes[self.runs.index(result)]

    @property
    def failed(self) -> int:
        """Failed requests over every round: non-2xx answers and socket errors."""
        return sum(r.failed for r in self.runs)

    @property
    def spread(self) -> float:
        """Relative spread of req/s across rounds (0 with one round)."""
        rates = [r.rps for r in self.runs]
        if len(rates) < 2 or not statistics.mean(rates):
            return 0.0
        return round((max(rates) - min(rates)) / statistics.mean(rates), 3)


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
    """One line of progress for a measurement."""
    where = f"{m.server:<12} w={m.workers} {m.store:<6} c={m.connections:<5} {m.label:<26}"
    if m.unavailable is not None:
        return f"{where} unavailable: {m.unavailable}"
    r = m.runs[-1]
    line = (
        f"{where} {r.rps:>9,.0f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms"
        f"  cpu/req {r.cpu_ms_per_request or 0:.3f} ms"
        f"  non-2xx {r.non_2xx}  socket errors {sum(r.socket_errors.values())}"
    )
    if m.refreshes:
        f = m.refreshes[-1]
        line += f"  work {f.work * 1000:.0f} ms  computations/expiry {f.per_expiry:.2f}"
    return line


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


@dataclass
class _Target:
    """A running server and its routes, made ready for load."""

    server: ServerName
    store: StoreName
    url: str
    pid: int
    #: route name -> (headers for wrk, why unavailable or None)
    ready: dict[str, tuple[dict[str, str], str | None]] = field(default_factory=dict)
    #: A peer's session cookie (see :func:`bench.peers.keys.seed`); None for qapp.
    peer_cookie: str | None = None

    def serves(self, route: str) -> bool:
        """Whether this server has ``route``: qapp has every route, each peer its own."""
        if self.server == "peer":
            return route in FLASK_ROUTES
        if self.server in PEERS:
            return route in PEER_ROUTES
        return self.server != METERED or route == "atomic"


def _start(stack: contextlib.ExitStack, server: HypercornServer) -> tuple[str, int]:
    say(f"   starting {server.name} ({server.workers} workers) on port {server.port}")
    started = stack.enter_context(server)
    return started.url, started.pid


def _targets(
    stack: contextlib.ExitStack,
    settings: Settings,
    workers: int,
    urls: dict[StoreName, str],
    folder: Path,
) -> list[_Target]:
    targets = []
    for kind in settings.servers:
        for store in settings.stores:
            env = {"QAPP_STORE_URL": urls[store], "QAPP_INSTANCE_PATH": str(folder / "instance")}
            server = HypercornServer(workers=workers, env=env, server=kind)
            targets.append(_Target(QAPP_SERVERS[kind], store, *_start(stack, server)))
    metered = "granian" in settings.servers and "redis" in settings.stores
    if settings.metrics_cost and metered and "atomic" in settings.routes:
        env = {
            "QAPP_STORE_URL": urls["redis"],
            "QAPP_INSTANCE_PATH": str(folder / "instance"),
            "QAPP_METRICS": "1",
        }
        server = HypercornServer(workers=workers, env=env, server="granian")
        targets.append(_Target(METERED, "redis", *_start(stack, server)))
    if settings.peer and set(settings.routes) & set(PEER_ROUTES):
        from bench.peers.keys import seed
        from bench.peers.server import (
            CeilingServer,
            GunicornServer,
            HypercornCeilingServer,
            UvicornServer,
        )

        cookie = seed(urls["redis"], CACHE_VALUE, CACHE_KEY)
        redis_url = urls["redis"]
        peers: list[tuple[ServerName, HypercornServer]] = []
        if settings.flask and set(settings.routes) & set(FLASK_ROUTES):
            gunicorn = GunicornServer(
                redis_url=redis_url, workers=workers, threads=settings.peer_threads
            )
            peers.append(("peer", gunicorn))
        peers.append(("fastapi", UvicornServer(redis_url=redis_url, workers=workers)))
        if "granian" in settings.servers:
            peers.append(("ceiling", CeilingServer(redis_url=redis_url, workers=workers)))
        if "hypercorn" in settings.servers:
            bare = HypercornCeilingServer(redis_url=redis_url, workers=workers)
            peers.append(("ceiling-hypercorn", bare))
        for name, server in peers:
            targets.append(_Target(name, "redis", *_start(stack, server), peer_cookie=cookie))
    return targets


def _cases(settings: Settings, routes: list[Route]) -> Iterator[tuple[Route, int]]:
    """Each route at the normal connection count, some at the high one too."""
    for route in routes:
        yield route, settings.connections
        if settings.high_connections and route.name in HIGH_ROUTES:
            yield route, settings.high_connections


def _round(
    result: Run,
    workers: int,
    targets: list[_Target],
    routes: list[Route],
    cells: dict[tuple[str, str, str, int], Measurement],
    report: Callable[[Measurement], None],
) -> None:
    """Drive every route once on every server, servers back to back per route."""
    settings = result.settings
    for route, connections in _cases(settings, routes):
        for target in targets:
            if not target.serves(route.name):
                continue
            key = (target.server, target.store, route.name, connections)
            m = cells.get(key)
            if m is None:
                m = Measurement(
                    target.server, workers, target.store, route.name, route.label, connections
                )
                cells[key] = m
                result.measurements.append(m)
            if route.name not in target.ready:
                # Prepared once per server, just before its first load.
                target.ready[route.name] = prepare(target.url, route, target.peer_cookie)
            headers, m.unavailable = target.ready[route.name]
            if m.unavailable is None:
                load = settings.load(connections)
                before = refresh_state(target.url, route) if route.counts_refreshes else None
                began = time.monotonic()
                m.runs.append(
                    run_wrk(
                        target.url + route.path,
                        load,
                        method=route.method,
                        headers=headers,
                        cpu_seconds=functools.partial(tree_cpu_seconds, target.pid),
                    )
                )
                if before is not None:
                    after = refresh_state(target.url, route)
                    m.refreshes.append(
                        Refreshes(
                            after.computation - before.computation,
                            round(time.monotonic() - began, 3),
                            after.ttl,
                            after.work,
                        )
                    )
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
        contextlib.ExitStack() as databases,
    ):
        folder = Path(tmp)
        urls: dict[StoreName, str] = {
            "sqlite": f"sqlite://{folder / 'bench.db'}",
            "redis": redis.url,
        }
        postgres = None
        if "postgresql" in settings.stores:
            say("   starting PostgreSQL (its defaults: every commit flushed to disk)")
            postgres = databases.enter_context(PostgresServer(durable=True))
            urls["postgresql"] = postgres.url
        for workers in settings.workers:
            say(f"-- {workers} worker(s)")
            with contextlib.ExitStack() as stack:
                targets = _targets(stack, settings, workers, urls, folder)
                cells: dict[tuple[str, str, str, int], Measurement] = {}
                for number in range(1, settings.repeat + 1):
                    if settings.repeat > 1:
                        say(f"   round {number} of {settings.repeat}")
                    _round(result, workers, targets, routes, cells, report)
        if settings.ceilings:
            say("-- store ceilings")
            result.ceilings.append(ceilings.redis_incr(redis.port, settings.connections))
            result.ceilings.append(ceilings.sqlite_upsert(folder, settings.duration))
            if postgres is not None:
                result.ceilings.append(
                    ceilings.postgres_upsert(
                        postgres, folder, settings.connections, settings.duration, settings.threads
                    )
                )
            for c in result.ceilings:
                say(f"{c.name:<14} {c.ops_per_s or 0:>9,.0f} ops/s  ({c.reason or c.how})")
    result.seconds = round(time.monotonic() - began, 1)
    return result
