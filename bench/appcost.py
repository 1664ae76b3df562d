"""The CPU one request costs inside the app, with no HTTP server: qapp, bare Quart, FastAPI.

``python -m bench`` measures whole servers under wrk, so the CPU it reports
per request is the app's and the server's together (h11 or granian, the
sockets, the event loop's I/O). This module takes the server away: it
starts its own redis-server and calls each app as an ASGI callable in this
process, with the scopes and messages a server would send, on the same
one-store-call routes:

- ``qapp``: qapp's service (:func:`qapp.app.create_app` on that Redis),
  its lifespan started, on its fast path;
- ``quart``: a bare Quart app, no qapp, making the FastAPI peer's Redis
  calls with the same ``redis.asyncio`` client, for health and the cached
  value only: what Quart itself costs (its own request handling, not the
  fast path);
- ``fastapi``: the FastAPI peer, :mod:`bench.peers.fastapi_app`.

Each cell is ``--requests`` requests from ``--concurrency`` callers at once
after a warm-up; every app runs every route in each of ``--repeat`` rounds,
and a cell reports the median of its rounds in µs of this process's CPU
(:func:`time.process_time`: the app, redis-py and the calling code, not
Redis's own) per request. Every answer must be 200: a route that is not
ready is an error of one line, never a measurement of 401s or 404s.
``--profile ROUTE`` adds a cProfile of qapp on one route.

The process collects garbage as a ``qapp serve`` worker does (a frozen heap
and a high young-generation threshold, :mod:`qapp.server.worker`), for all
three apps alike: with Python's defaults the collector's full passes over
the heap cost qapp's service, whose heap is the largest, about a fifth of
its CPU. ``--python-gc`` keeps the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import redis.asyncio as aioredis
from quart import Quart

from bench.hotspots import Hotspot, by_package, top
from bench.peers import keys, reads
from bench.report import cpu_model, package_version
from bench.routes import CACHE_KEY, CACHE_VALUE, PEER_ROUTES, ROUTES, USER, Route
from qapp.app import create_app
from qapp.ext.fastpath import LeanHTTPConnection
from qapp.server.worker import tune_gc
from qapp.testing import RedisServer, ServerError, redis_server_binary

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]]
Headers = list[tuple[bytes, bytes]]

#: Where ``python -m bench.appcost`` writes unless told otherwise.
RESULTS = Path(__file__).resolve().parent / "results" / "appcost"
#: The apps, in the table's order, and how the table names them.
DISPLAY = {"qapp": "qapp", "quart": "bare Quart", "fastapi": "FastAPI"}
APPS = tuple(DISPLAY)
#: What each app is, for the results.
ABOUT = {
    "qapp": "qapp's service (create_app) on Redis, its lifespan started, on its fast path",
    "quart": "a bare Quart app (no qapp, Quart's own request handling), the FastAPI peer's "
    "Redis calls with the same redis.asyncio client",
    "fastapi": "the FastAPI peer, bench.peers.fastapi_app",
}
#: The routes measured unless told otherwise, in the table's order.
DEFAULT_ROUTES = ("health", "cache-get", "session-read", "me", "atomic")
#: The routes the bare Quart app serves.
QUART_ROUTES = ("health", "cache-get")
#: The ratio columns: ``(numerator, denominator, heading)``, of CPU per request.
RATIOS = (
    ("qapp", "fastapi", "qapp ÷ FastAPI"),
    ("quart", "fastapi", "bare Quart ÷ FastAPI"),
    ("qapp", "quart", "qapp ÷ bare Quart"),
)
#: The packages a profile's most cumulative functions are listed for, each on its own.
PROFILED_PACKAGES = ("quart", "werkzeug", "qapp", "redis", "asyncio")
#: Packages whose versions the results record.
PACKAGES = ("quart", "werkzeug", "fastapi", "starlette", "redis", "uvloop")
FASTAPI_PEER = "bench.peers.fastapi_app"
JSON_BODY: Headers = [(b"content-type", b"application/json")]


def say(message: str) -> None:
    """Progress goes to stderr, so stdout stays free for the summary."""
    print(message, file=sys.stderr, flush=True)


class AppcostError(Exception):
    """An app could not be started or stopped (its lifespan, its fast path): one line."""


class NotReady(Exception):
    """A route that could not be prepared, or that answered other than 200: one line."""


@dataclass(frozen=True)
class Answer:
    """What an app sent back for one request."""

    status: int
    headers: Headers
    body: bytes

    def cookie(self) -> str | None:
        """The cookies the answer set, as a ``Cookie`` header sends them back."""
        found = [
            value.split(b";", 1)[0].decode("latin-1")
            for name, value in self.headers
            if name.lower() == b"set-cookie"
        ]
        return "; ".join(found) or None

    def why(self) -> str:
        """The status and, short, what the body says: ``404 (not_found)``."""
        try:
            code = json.loads(self.body)["error"]
            if isinstance(code, str):
                return f"{self.status} ({code})"
        except (ValueError, KeyError, TypeError):
            pass
        text = self.body.decode("utf-8", errors="replace").strip().replace("\n", " ")[:80]
        return f"{self.status} ({text})"


def request_scope(
    method: str, path: str, headers: Sequence[tuple[bytes, bytes]] = (), body: bytes = b""
) -> Scope:
    """The HTTP scope a server builds for a request from wrk: HTTP/1.1 on loopback."""
    length = [(b"content-length", str(len(body)).encode())] if body else []
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers, *length],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }


class Caller:
    """Calls one ASGI app in this process, as a server does for each request."""

    def __init__(self, name: str, app: ASGIApp) -> None:
        self.name = name
        self.app = app
        # Never set: once a request's body is read, a receive waits here, as
        # for a client that stays connected until its answer comes. (qapp's
        # fast path asks only after 20 ms; Quart's own handling at once.)
        self._connected = asyncio.Event()

    async def __call__(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = b"",
    ) -> Answer:
        return await self.request(request_scope(method, path, headers, body), body)

    async def request(self, scope: Scope, body: bytes = b"") -> Answer:
        """One request: ``scope`` (a copy of it, with state of its own) and ``body``."""
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        started: list[Message] = []
        chunks: list[bytes] = []

        async def receive() -> Message:
            if pending:
                return pending.pop()
            await self._connected.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.append(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app({**scope, "state": {}}, receive, send)
        except Exception as exc:
            raise NotReady(
                f"{scope['method']} {scope['path']} raised {type(exc).__name__}: {exc}"
            ) from exc
        if not started:
            raise NotReady(f"{scope['method']} {scope['path']} sent no answer")
        return Answer(started[0]["status"], list(started[0].get("headers", [])), b"".join(chunks))


class Lifespan:
    """An app's ASGI lifespan, started and shut down as a server does around its requests."""

    #: Seconds an app has to answer a startup or a shutdown.
    TIMEOUT = 30.0

    def __init__(self, name: str, app: ASGIApp) -> None:
        self.name = name
        self.app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _exchange(self, kind: str) -> str:
        """Send ``lifespan.<kind>``; the type of the answer, or why there was none."""
        assert self._task is not None
        await self._inbox.put({"type": f"lifespan.{kind}"})
        answer = asyncio.ensure_future(self._outbox.get())
        await asyncio.wait(
            {answer, self._task}, timeout=self.TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if answer.done():
            message = answer.result()
            found = str(message["type"])
            return found if found.endswith(".complete") else f"{found}: {message.get('message')}"
        answer.cancel()
        await asyncio.gather(answer, return_exceptions=True)
        if not self._task.done():
            return f"no answer in {self.TIMEOUT:g} s"
        error = None if self._task.cancelled() else self._task.exception()
        return f"the app ended without answering ({error!r})"

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        self._task = asyncio.create_task(self.app(scope, self._inbox.get, self._outbox.put))
        found = await self._exchange("startup")
        if found != "lifespan.startup.complete":
            await self._end()
            raise AppcostError(f"{self.name}: its lifespan startup failed: {found}")

    async def stop(self) -> None:
        found = await self._exchange("shutdown")
        await self._end()
        if found != "lifespan.shutdown.complete":
            raise AppcostError(f"{self.name}: its lifespan shutdown failed: {found}")

    async def _end(self) -> None:
        # The app's lifespan returns once shut down; one that does not is cancelled.
        assert self._task is not None
        await asyncio.wait({self._task}, timeout=self.TIMEOUT)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@dataclass(frozen=True)
class Subject:
    """One app under measurement: how to call it, which routes it serves, how to ready one."""

    name: str
    call: Caller
    serves: Callable[[Route], bool]
    #: The headers (a session cookie) the route's requests send; NotReady if it cannot be.
    prepare: Callable[[Route], Awaitable[Headers]]


async def _started(stack: contextlib.AsyncExitStack, name: str, app: ASGIApp) -> Caller:
    lifespan = Lifespan(name, app)
    await lifespan.start()
    stack.push_async_callback(lifespan.stop)
    return Caller(name, app)


async def _login(call: Caller) -> str:
    """Log :data:`bench.routes.USER` in, registering it first; its session cookie."""
    body = json.dumps(USER).encode()
    answer = await call("POST", "/auth/login", JSON_BODY, body)
    if answer.status == 401:
        registered = await call("POST", "/auth/register", JSON_BODY, body)
        if registered.status not in (201, 409):
            raise NotReady(f"POST /auth/register answered {registered.why()}")
        answer = await call("POST", "/auth/login", JSON_BODY, body)
    if answer.status != 200:
        raise NotReady(f"POST /auth/login answered {answer.why()}")
    cookie = answer.cookie()
    if cookie is None:
        raise NotReady("POST /auth/login set no session cookie")
    return cookie


async def prepare_qapp(call: Caller, route: Route) -> Headers:
    """Make ``route`` ready on qapp as :func:`bench.routes.prepare` does, by calling the app."""
    cookie: str | None = None
    if route.session_from is not None:
        answer = await call("POST", route.session_from)
        cookie = answer.cookie()
        if not 200 <= answer.status < 300 or cookie is None:
            why = "" if cookie else ", no session cookie"
            raise NotReady(f"POST {route.session_from} answered {answer.why()}{why}")
    if route.needs_login:
        cookie = await _login(call)
    if route.needs_cache_value:
        answer = await call("PUT", route.path, JSON_BODY, json.dumps(CACHE_VALUE).encode())
        if not 200 <= answer.status < 300:
            raise NotReady(f"PUT {route.path} answered {answer.why()}")
    headers: Headers = [] if cookie is None else [(b"cookie", cookie.encode())]
    if route.needs_session:
        # One client: every request sends the session cookie of a first one.
        answer = await call(route.method, route.path, headers)
        cookie = answer.cookie()
        if cookie is None:
            raise NotReady(f"{route.label} answered {answer.why()}, no session cookie")
        headers = [(b"cookie", cookie.encode())]
    return headers


async def _qapp(stack: contextlib.AsyncExitStack, redis_url: str, folder: Path) -> Subject:
    config = {
        "QAPP_STORE_URL": redis_url,
        "QAPP_INSTANCE_PATH": str(folder),
        "QAPP_FAST_PATH": True,
        "QAPP_METRICS": False,
    }
    app = create_app(config)
    if not issubclass(app.asgi_http_class, LeanHTTPConnection):
        raise AppcostError("qapp: the service is not on its fast path")
    call = await _started(stack, "qapp", cast(ASGIApp, app))

    async def prepare(route: Route) -> Headers:
        return await prepare_qapp(call, route)

    return Subject("qapp", call, lambda route: True, prepare)


def peer_client(redis_url: str) -> aioredis.Redis:
    """A ``redis.asyncio`` client as the FastAPI peer makes its own: a blocking pool of 64."""
    pool = aioredis.BlockingConnectionPool.from_url(
        redis_url, max_connections=64, timeout=5, socket_timeout=5, socket_connect_timeout=2
    )
    return aioredis.Redis.from_pool(pool)


def bare_quart(client: aioredis.Redis) -> Quart:
    """Quart with no qapp, serving health and the cached value as the FastAPI peer does."""
    app = Quart(__name__)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        await client.ping()
        return {"status": "ok", "worker": os.getpid(), "store": "redis"}

    @app.get("/cache/<key>")
    async def cache_get(key: str) -> tuple[dict[str, Any], int]:
        status, body = await reads.cache_get(client, key)
        return body, status

    return app


async def _quart(stack: contextlib.AsyncExitStack, redis_url: str) -> Subject:
    client = peer_client(redis_url)
    stack.push_async_callback(client.aclose)
    call = await _started(stack, "quart", cast(ASGIApp, bare_quart(client)))

    async def prepare(route: Route) -> Headers:
        return []

    return Subject("quart", call, lambda route: route.name in QUART_ROUTES, prepare)


def import_peer(redis_url: str) -> ModuleType:
    """The FastAPI peer, its client (made on import, from ``PEER_REDIS_URL``) on ``redis_url``."""
    before = os.environ.get("PEER_REDIS_URL")
    os.environ["PEER_REDIS_URL"] = redis_url
    try:
        loaded = sys.modules.get(FASTAPI_PEER)
        return importlib.reload(loaded) if loaded else importlib.import_module(FASTAPI_PEER)
    finally:
        if before is None:
            del os.environ["PEER_REDIS_URL"]
        else:
            os.environ["PEER_REDIS_URL"] = before


async def _fastapi(stack: contextlib.AsyncExitStack, redis_url: str, cookie: str) -> Subject:
    peer = import_peer(redis_url)
    stack.push_async_callback(peer.client.aclose)
    call = await _started(stack, "fastapi", cast(ASGIApp, peer.app))
    # Its cached value, session and user were written beforehand (keys.seed).
    session: Headers = [(b"cookie", cookie.encode())]

    async def prepare(route: Route) -> Headers:
        return session if route.session_from or route.needs_login else []

    return Subject("fastapi", call, lambda route: True, prepare)


@dataclass(frozen=True)
class Settings:
    """What one run measures, and how much."""

    routes: tuple[Route, ...] = tuple(ROUTES[name] for name in DEFAULT_ROUTES)
    #: Requests measured per app, route and round.
    requests: int = 5000
    #: Callers at once, each sending its next request when answered.
    concurrency: int = 64
    #: Requests before each measurement, not measured.
    warmup: int = 500
    #: Rounds; each cell reports the median of its rounds.
    repeat: int = 3
    #: A route (its name) to profile qapp on after the rounds, or None.
    profile: str | None = None
    #: Collect garbage as a ``qapp serve`` worker does (:func:`qapp.server.worker.tune_gc`),
    #: for every app alike; False keeps Python's defaults.
    worker_gc: bool = True


@dataclass
class Cell:
    """One app on one route: µs of CPU and requests/s in each round, or why it was not."""

    app: str
    route: str
    label: str
    rounds_us: list[float] = field(default_factory=list)
    rounds_rps: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def us(self) -> float | None:
        """The median µs of CPU per request, None if not measured."""
        if self.error is not None or not self.rounds_us:
            return None
        return statistics.median(self.rounds_us)


@dataclass(frozen=True)
class AppProfile:
    """qapp under cProfile on one route: own time by package, and the top functions."""

    route: str
    path: str
    #: Own time summed per package, largest first.
    packages: list[Hotspot]
    #: The functions with the most own time.
    own: list[Hotspot]
    #: Per package of :data:`PROFILED_PACKAGES`, its functions with the most cumulative time.
    cumulative: dict[str, list[Hotspot]]


@dataclass
class Run:
    """One run: its settings, every cell, and the profile if asked for."""

    settings: Settings
    started: float
    seconds: float
    loop: str
    cells: list[Cell]
    profile: AppProfile | None = None

    def cell(self, app: str, route: str) -> Cell | None:
        return next((c for c in self.cells if c.app == app and c.route == route), None)

    @property
    def errors(self) -> list[str]:
        """One line per cell that was not measured: the app, the route and why."""
        return [f"{c.app} {c.label}: {c.error}" for c in self.cells if c.error is not None]


async def load(call: Caller, scope: Scope, count: int, concurrency: int) -> None:
    """``count`` requests of ``scope`` from ``concurrency`` callers at once, each sending
    its next request when answered.

    Raises:
        NotReady: an answer other than 200 (the other callers are stopped first).
    """

    async def caller(share: int) -> None:
        for _ in range(share):
            answer = await call.request(scope)
            if answer.status != 200:
                raise NotReady(f"{scope['method']} {scope['path']} answered {answer.why()}")

    shares = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
    tasks = [asyncio.ensure_future(caller(share)) for share in shares if share]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        # gather leaves the other callers running: stop them before going on.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _measured(call: Caller, scope: Scope, settings: Settings) -> tuple[float, float]:
    """A warm-up, then the load: µs of this process's CPU per request, and requests/s."""
    if settings.warmup:
        await load(call, scope, settings.warmup, settings.concurrency)
    gc.collect()
    if settings.worker_gc:
        # What exists now (the apps, their connections) is frozen, as a worker
        # freezes what exists once its app is imported.
        tune_gc()
    cpu, wall = time.process_time(), time.perf_counter()
    await load(call, scope, settings.requests, settings.concurrency)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return 1e6 * cpu / settings.requests, settings.requests / wall if wall > 0 else 0.0


async def _profiled(call: Caller, scope: Scope, settings: Settings, path: Path) -> AppProfile:
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        await load(call, scope, settings.requests, settings.concurrency)
    finally:
        profiler.disable()
    profiler.dump_stats(path)
    cumulative = {
        package: top(path, 4, cumulative=True, package=package) for package in PROFILED_PACKAGES
    }
    return AppProfile(
        str(settings.profile), str(path), by_package(path, count=100), top(path), cumulative
    )


async def measure(
    settings: Settings, redis_url: str, folder: Path, peer_cookie: str, profile_path: Path | None
) -> tuple[list[Cell], AppProfile | None]:
    """Start the three apps on ``redis_url``, ready their routes, and measure every round."""
    cells: dict[tuple[str, str], Cell] = {}
    ready: dict[tuple[str, str], Scope] = {}
    async with contextlib.AsyncExitStack() as stack:
        subjects = [
            await _qapp(stack, redis_url, folder),
            await _quart(stack, redis_url),
            await _fastapi(stack, redis_url, peer_cookie),
        ]
        for route in settings.routes:
            for subject in subjects:
                if not subject.serves(route):
                    continue
                key = (subject.name, route.name)
                cells[key] = cell = Cell(subject.name, route.name, route.label)
                try:
                    scope = request_scope(route.method, route.path, await subject.prepare(route))
                    answer = await subject.call.request(scope)
                    if answer.status != 200:
                        raise NotReady(f"{route.label} answered {answer.why()}")
                except NotReady as exc:
                    cell.error = str(exc)
                    say(f"appcost: {subject.name}: {exc}")
                else:
                    ready[key] = scope
        for round_ in range(1, settings.repeat + 1):
            for route in settings.routes:
                for subject in subjects:
                    key = (subject.name, route.name)
                    if key not in ready:
                        continue
                    cell = cells[key]
                    try:
                        us, rps = await _measured(subject.call, ready[key], settings)
                    except NotReady as exc:
                        cell.error = str(exc)
                        del ready[key]
                        say(f"appcost: {subject.name}: {exc}")
                        continue
                    cell.rounds_us.append(us)
                    cell.rounds_rps.append(rps)
                    say(
                        f"round {round_}/{settings.repeat}  {DISPLAY[subject.name]:<10} "
                        f"{route.label:<22} {us:7.1f} µs CPU/request  {rps:8,.0f} req/s"
                    )
        profile = None
        if settings.profile is not None and profile_path is not None:
            key = ("qapp", settings.profile)
            if key in ready:
                say(f"profiling qapp on {ROUTES[settings.profile].label} ...")
                profile = await _profiled(subjects[0].call, ready[key], settings, profile_path)
    return list(cells.values()), profile


def event_loop() -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """uvloop's loop if it is installed, as the servers use; else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def run(settings: Settings, *, profile_path: Path | None = None) -> Run:
    """Start a redis-server, measure every app on every route, and stop everything."""
    started = time.time()
    loop, factory = event_loop()
    with tempfile.TemporaryDirectory(prefix="qapp-appcost-") as tmp, RedisServer() as redis:
        cookie = keys.seed(redis.url, CACHE_VALUE, CACHE_KEY)
        with asyncio.Runner(loop_factory=factory) as runner:
            cells, profile = runner.run(
                measure(settings, redis.url, Path(tmp), cookie, profile_path)
            )
    return Run(settings, started, time.time() - started, loop, cells, profile)


def machine() -> dict[str, Any]:
    """Where the run happened: CPU, cores, OS, Python, Redis and the packages' versions."""
    redis = subprocess.run(
        [redis_server_binary(), "--version"], capture_output=True, text=True, check=False
    )
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis_server": redis.stdout.strip(),
        "packages": {name: package_version(name) for name in PACKAGES},
    }


def ratio(run: Run, route: str, numerator: str, denominator: str) -> float | None:
    """One app's CPU per request over another's on ``route``; None if either is missing."""
    top_, bottom = run.cell(numerator, route), run.cell(denominator, route)
    if top_ is None or bottom is None or top_.us is None or not bottom.us:
        return None
    return top_.us / bottom.us


def to_dict(run: Run) -> dict[str, Any]:
    """The run as plain data: settings, machine, every cell, the ratios, errors, profile."""
    s = run.settings
    rows = []
    for route in s.routes:
        row: dict[str, Any] = {"route": route.name, "label": route.label}
        for app in APPS:
            cell = run.cell(app, route.name)
            row[app] = None if cell is None or cell.us is None else round(cell.us, 1)
        for numerator, denominator, _ in RATIOS:
            value = ratio(run, route.name, numerator, denominator)
            row[f"{numerator}/{denominator}"] = None if value is None else round(value, 3)
        rows.append(row)
    return {
        "started": datetime.fromtimestamp(run.started, UTC).strftime("%Y-%m-%d %H:%M"),
        "seconds": round(run.seconds, 1),
        "settings": {
            "routes": [route.name for route in s.routes],
            "requests": s.requests,
            "concurrency": s.concurrency,
            "warmup": s.warmup,
            "repeat": s.repeat,
            "loop": run.loop,
            "profile": s.profile,
        },
        "machine": machine(),
        "apps": ABOUT,
        "unit": "µs of this process's CPU per request (time.process_time), median of rounds",
        "rows": rows,
        "cells": [
            {
                "app": c.app,
                "route": c.route,
                "label": c.label,
                "us_per_request": None if c.us is None else round(c.us, 1),
                "rounds_us": [round(us, 1) for us in c.rounds_us],
                "rounds_rps": [round(rps) for rps in c.rounds_rps],
                "error": c.error,
            }
            for c in run.cells
        ],
        "errors": run.errors,
        "profile": None if run.profile is None else asdict(run.profile),
    }


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _shares(spots: list[dict[str, Any]], count: int) -> str:
    return ", ".join(f"{s['function']} {s['share']:g} %" for s in spots[:count])


def markdown(data: dict[str, Any]) -> str:
    """The table (one row per route), what was not measured, and the profile."""
    s, m = data["settings"], data["machine"]
    rounds = "one round" if s["repeat"] == 1 else f"the median of {s['repeat']} rounds"
    lines = [
        f"The app's own CPU per request, {data['started']} UTC: {m['cpu']}, {m['cores']} cores, "
        f"{m['os']}, Python {m['python']}, {m['redis_server'].split(' sha=')[0]}, {s['loop']}. "
        "Each app called in process as an ASGI app, no HTTP server: "
        f"{s['requests']:,} requests per cell, {s['concurrency']} at once, after "
        f"{s['warmup']:,} of warm-up; {rounds}, every app on every route in each round.",
        "",
        "µs of this process's CPU per request (the app, redis-py and the calling code; "
        "Redis's own CPU is not counted). A ratio above 1: the first app costs more.",
        "",
        "| route | " + " | ".join(DISPLAY.values()) + " | "
        + " | ".join(heading for _, _, heading in RATIOS) + " |",
        "|---|" + "---:|" * (len(DISPLAY) + len(RATIOS)),
    ]  # fmt: skip
    for row in data["rows"]:
        cells = [_us(row[app]) for app in APPS]
        cells += [_times(row[f"{n}/{d}"]) for n, d, _ in RATIOS]
        lines.append(f"| `{row['label']}` | " + " | ".join(cells) + " |")
    if data["errors"]:
        lines += ["", "Not measured:", ""]
        lines += [f"- {error}" for error in data["errors"]]
    profile = data["profile"]
    if profile is not None:
        label = ROUTES[profile["route"]].label
        lines += [
            "",
            f"qapp on `{label}` under cProfile ({s['requests']:,} requests; cProfile slows it, "
            "so the shares matter, not the times). Own time by package: "
            f"{_shares(profile['packages'], 8)}. Most own time: {_shares(profile['own'], 5)}.",
            "",
            "Most cumulative time, by package:",
            "",
        ]
        lines += [
            f"- {package}: {_shares(spots, 4)}" for package, spots in profile["cumulative"].items()
        ]
    return "\n".join(lines) + "\n"


def write(run: Run, out: Path) -> tuple[dict[str, Any], list[Path]]:
    """Write ``appcost.json`` and ``appcost.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    data = to_dict(run)
    paths = [out / "appcost.json", out / "appcost.md"]
    paths[0].write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    paths[1].write_text(markdown(data))
    return data, paths


def table(data: dict[str, Any]) -> str:
    """The rows as plain text, for the terminal."""
    widths = (22, 8, 10, 8, 14, 20, 17)

    def line(first: str, *rest: str) -> str:
        cells = [first.ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        return "  ".join(cells)

    lines = [line("route", *DISPLAY.values(), *(heading for _, _, heading in RATIOS))]
    for row in data["rows"]:
        lines.append(
            line(
                row["label"],
                *(_us(row[app]) for app in APPS),
                *(_times(row[f"{n}/{d}"]) for n, d, _ in RATIOS),
            )
        )
    return "\n".join(lines)


def _routes(text: str) -> tuple[Route, ...]:
    """``health,cache-get``: routes the FastAPI peer serves too."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    bad = [name for name in names if name not in PEER_ROUTES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown routes {bad}; known: {', '.join(DEFAULT_ROUTES)}"
        )
    return tuple(ROUTES[name] for name in dict.fromkeys(names))


def parser() -> argparse.ArgumentParser:
    defaults = Settings()
    p = argparse.ArgumentParser(
        prog="python -m bench.appcost",
        description="The CPU one request costs inside the app, no HTTP server: qapp's service, "
        "a bare Quart app and the FastAPI peer, each called in process as an ASGI app on the "
        "same routes and the same Redis (its own redis-server).",
    )
    p.add_argument(
        "--routes",
        type=_routes,
        default=defaults.routes,
        help=f"comma-separated (default {','.join(DEFAULT_ROUTES)})",
    )
    p.add_argument(
        "-n",
        "--requests",
        type=int,
        default=defaults.requests,
        help="requests measured per app, route and round (default %(default)s)",
    )
    p.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=defaults.concurrency,
        help="callers at once (default %(default)s)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=defaults.warmup,
        help="requests before each measurement (default %(default)s)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=defaults.repeat,
        help="rounds; each cell is the median (default %(default)s)",
    )
    p.add_argument(
        "--profile",
        metavar="ROUTE",
        choices=DEFAULT_ROUTES,
        help="also profile qapp on this route (one of --routes) with cProfile",
    )
    p.add_argument(
        "--python-gc",
        action="store_true",
        help="keep Python's collector defaults instead of a qapp serve worker's, for every app",
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=RESULTS,
        help="output directory (default bench/results/appcost)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table, write the results; 1 if a cell could not be measured."""
    p = parser()
    args = p.parse_args(argv)
    if min(args.requests, args.concurrency, args.repeat) < 1 or args.warmup < 0:
        p.error("--requests, --concurrency and --repeat must be at least 1, --warmup at least 0")
    if args.profile is not None and args.profile not in {r.name for r in args.routes}:
        p.error(f"--profile {args.profile}: not one of --routes")
    settings = Settings(
        routes=args.routes,
        requests=args.requests,
        concurrency=args.concurrency,
        warmup=args.warmup,
        repeat=args.repeat,
        profile=args.profile,
        worker_gc=not args.python_gc,
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    profile_path = None if args.profile is None else out / f"qapp-{args.profile}.prof"
    try:
        result = run(settings, profile_path=profile_path)
    except (AppcostError, ServerError) as exc:
        say(f"appcost: {str(exc).splitlines()[0]}")
        return 2
    except KeyboardInterrupt:
        say("appcost: interrupted; the redis-server it started has been stopped")
        return 130
    data, paths = write(result, out)
    print(f"\nµs of CPU per request, in process ({data['settings']['loop']}):")
    print(table(data))
    if result.profile is not None:
        profile = result.profile
        print(f"\nqapp on {ROUTES[profile.route].label} under cProfile ({profile.path}):")
        print("own time by package:")
        for spot in profile.packages[:8]:
            print(f"{spot.share:5.1f} %  {spot.calls:>9} calls  {spot.function}")
        print("most own time:")
        for spot in profile.own[:6]:
            print(f"{spot.share:5.1f} %  {spot.calls:>9} calls  {spot.function}")
        print("most cumulative time, by package:")
        for package, spots in profile.cumulative.items():
            for spot in spots:
                print(f"{spot.share:5.1f} %  {spot.calls:>9} calls  {package:<9} {spot.function}")
    for error in result.errors:
        say(f"appcost: not measured: {error}")
    print("\nWrote " + ", ".join(str(path) for path in paths))
    return 1 if result.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
