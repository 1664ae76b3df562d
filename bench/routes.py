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
#: The user the ``me`` route is loaded as: registered (once per store) and logged in.
USER = {"username": "bench_user", "password": "bench-password-not-secret"}


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
    #: A POST that makes a session first: wrk sends the cookie it set.
    session_from: str | None = None
    #: Register (if need be) and log in a user first: wrk sends its session cookie.
    needs_login: bool = False
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
            "shared cache read: one GET",
            needs_cache_value=True,
        ),
        Route(
            "session-read",
            "GET",
            "/session/counter",
            "session read with a cookie: the session, then its value",
            session_from="/session/counter/inc",
        ),
        Route(
            "me",
            "GET",
            "/auth/me",
            "logged-in user: the session, the login generation, the user",
            needs_login=True,
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

#: Routes the FastAPI peer and the bare-ASGI ceilings serve too, with the same store calls.
PEER_ROUTES = ("health", "atomic", "cache-get", "session-read", "me")
#: Routes the Flask peer serves.
FLASK_ROUTES = ("health", "atomic")
#: The routes that make one store call (or a fixed few in sequence): the fast path's targets.
ONE_CALL_ROUTES = ("atomic", "cache-get", "session-read", "me")


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


def _cookie(answer_headers: dict[str, str]) -> str | None:
    return answer_headers.get("set-cookie", "").split(";", 1)[0] or None


def _login(base_url: str) -> tuple[str | None, str | None]:
    """Log the bench's user in, registering it first if the store does not know it yet.

    Returns:
        The session cookie, or None and why not.
    """
    body, json_type = json.dumps(USER).encode(), {"Content-Type": "application/json"}
    status, headers, raw = _request(base_url + "/auth/login", "POST", body, json_type)
    if status == 401:
        status, _, raw = _request(base_url + "/auth/register", "POST", body, json_type)
        if status not in (201, 409):
            return None, f"POST /auth/register answered {status} ({_snippet(raw)})"
        status, headers, raw = _request(base_url + "/auth/login", "POST", body, json_type)
    if status != 200:
        return None, f"POST /auth/login answered {status} ({_snippet(raw)})"
    cookie = _cookie(headers)
    return cookie, None if cookie else "POST /auth/login set no session cookie"


def prepare(
    base_url: str, route: Route, peer_cookie: str | None = None
) -> tuple[dict[str, str], str | None]:
    """Make ``route`` ready and try it once.

    ``peer_cookie`` is for a peer, whose cached value, session and user were
    written into Redis beforehand (:func:`bench.peers.keys.seed`): the cookie
    naming that session, sent instead of making one through the route.

    Returns:
        The headers wrk must send (a session cookie, say), and None if the
        route answered 2xx, else why it cannot be measured.
    """
    headers: dict[str, str] = {}
    if peer_cookie is not None:
        if route.session_from or route.needs_login:
            headers["Cookie"] = peer_cookie
        status, _, raw = _request(base_url + route.path, route.method, headers=headers)
        if not 200 <= status < 300:
            return headers, f"{route.label} answered {status} ({_snippet(raw)})"
        return headers, None
    if route.session_from is not None:
        status, answer_headers, raw = _request(base_url + route.session_from, "POST")
        cookie = _cookie(answer_headers)
        if cookie is None:
            return headers, f"POST {route.session_from} answered {status} with no session cookie"
        headers["Cookie"] = cookie
    if route.needs_login:
        cookie, why = _login(base_url)
        if cookie is None:
            return headers, why
        headers["Cookie"] = cookie
    if route.needs_cache_value:
        status, _, raw = _request(
            base_url + route.path,
            "PUT",
            json.dumps(CACHE_VALUE).encode(),
            {"Content-Type": "application/json"},
        )
        if not 200 <= status < 300:
            return headers, f"PUT {route.path} answered {status} ({_snippet(raw)})"
    status, answer_headers, raw = _request(base_url + route.path, route.method, headers=headers)
    if route.needs_session and 200 <= status < 300:
        # One client: every connection sends the same session cookie, so the
        # load is concurrent increments of one user's counter.
        cookie = _cookie(answer_headers)
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
