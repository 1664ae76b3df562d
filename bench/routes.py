"""The routes the benchmark drives, and how each is made ready for load.

Each route is probed with one real request before it is measured. A route
that answers 404 or 405 has not been built (or merged) yet: it is reported
as unavailable, with the answer it gave, instead of being loaded with
thousands of errors or stopping the run.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

#: The key the cache route reads; written once before the run.
CACHE_KEY = "bench"
CACHE_VALUE = {"greeting": "hello", "n": 42}


@dataclass(frozen=True)
class Route:
    """One HTTP route under load: what wrk sends, and how it is set up first."""

    #: Short name for ``--routes`` and the report, e.g. ``atomic``.
    name: str
    method: str
    path: str
    #: What kind of state the route touches, for the report.
    note: str
    #: Load it as one client: wrk sends the session cookie of a first request.
    needs_session: bool = False
    #: Write the cache key before reading it under load.
    needs_cache_value: bool = False
    #: A ``cached`` value under load across its expiries: its computations are
    #: read before and after each run (see :func:`refresh_state`).
    counts_refreshes: bool = False

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


ROUTES: dict[str, Route] = {
    route.name: route
    for route in [
        Route("health", "GET", "/health", "the server's ceiling: pings the store"),
        Route("atomic", "POST", "/counter/atomic", "store incr: INCRBY / UPSERT"),
        Route("shared-locked", "POST", "/counter/shared-locked", "store lock around get/set"),
        Route("locked", "POST", "/counter/locked", "per-worker asyncio.Lock"),
        Route(
            "session-inc",
            "POST",
            "/session/counter/inc",
            "server-side session of one client",
            needs_session=True,
        ),
        Route(
            "cache-get",
            "GET",
            f"/cache/{CACHE_KEY}",
            "shared cache read",
            needs_cache_value=True,
        ),
        # One `cached` value (0.25 s of work, fresh for 2 s) loaded across its
        # expiries, three ways: see qapp/service/lab.py.
        Route(
            "cached-expire",
            "GET",
            "/lab/refresh/expire",
            "cached, no stale: callers wait at each expiry",
            counts_refreshes=True,
        ),
        Route(
            "cached-stale",
            "GET",
            "/lab/refresh/stale",
            "cached with stale: refreshed in the background",
            counts_refreshes=True,
        ),
        Route(
            "cached-early",
            "GET",
            "/lab/refresh/early",
            "cached, XFetch: refreshed before expiry",
            counts_refreshes=True,
        ),
    ]
}

#: Routes the Flask peer serves too.
PEER_ROUTES = ("health", "atomic")


def _request(
    url: str, method: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _lower(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers.items()), exc.read()


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    # Header names are case-insensitive, and hypercorn sends them lower-case.
    return {name.lower(): value for name, value in items}


def prepare(base_url: str, route: Route) -> tuple[dict[str, str], str | None]:
    """Make ``route`` ready and try it once.

    Returns:
        The headers wrk must send (a session cookie, say), and None if the
        route answered 2xx, else why it cannot be measured.
    """
    headers: dict[str, str] = {}
    if route.needs_cache_value:
        status, _, raw = _request(
            base_url + route.path,
            "PUT",
            json.dumps(CACHE_VALUE).encode(),
            {"Content-Type": "application/json"},
        )
        if not 200 <= status < 300:
            return headers, f"PUT {route.path} answered {status} ({_snippet(raw)})"
    status, answer_headers, raw = _request(base_url + route.path, route.method)
    if route.needs_session and 200 <= status < 300:
        # One client: every connection sends the same session cookie, so the
        # load is concurrent increments of one user's counter.
        cookie = answer_headers.get("set-cookie", "").split(";", 1)[0]
        if not cookie:
            return headers, f"{route.label} set no session cookie"
        headers["Cookie"] = cookie
    if not 200 <= status < 300:
        return headers, f"{route.label} answered {status} ({_snippet(raw)})"
    return headers, None


def _snippet(raw: bytes) -> str:
    # The project's error shape names its code; anything else is shown short.
    try:
        code = json.loads(raw)["error"]
        if isinstance(code, str):
            return code
    except (ValueError, KeyError, TypeError):
        pass
    return raw.decode("utf-8", errors="replace").strip().replace("\n", " ")[:80]


@dataclass(frozen=True)
class RefreshState:
    """A ``cached`` route's value at one moment: which computation, and its timings."""

    computation: int
    #: Seconds the value stays fresh, and seconds its computation takes.
    ttl: float
    work: float


def refresh_state(base_url: str, route: Route) -> RefreshState:
    """Ask a ``counts_refreshes`` route which computation its value is now."""
    status, _, raw = _request(base_url + route.path, route.method)
    if not 200 <= status < 300:
        raise ValueError(f"{route.label} answered {status} ({_snippet(raw)})")
    body = json.loads(raw)
    return RefreshState(int(body["computation"]), float(body["ttl"]), float(body["work"]))
