"""Server-side sessions: the cookie holds a signed random id, the data lives in a Store.

Quart's default session travels in the cookie: about 4 KB at most, readable by
the client, and every request writes back its own copy, so concurrent
requests overwrite each other. Here the cookie carries only a random id
(256 bits), signed with itsdangerous as Quart signs its cookies, and the
data lives in the session store (``get_store("session")``) as JSON, with a
sliding ttl (``SESSION_TTL`` seconds, a week by default) renewed by the
requests that present the cookie (by each worker at most once per tenth of
the ttl).

Keys in the session store::

    session:<id>             the session's data (a JSON object)
    session:<id>:<name>      a session-scoped value, e.g. the session counter

Rules:

- An id is adopted only if its signature is good *and* the store holds it.
  An unknown, expired or tampered id starts a fresh, empty session; its id
  is always new and random, never the one the client offered.
- Nothing is written for a client who never needs a session: the id is
  created (and the cookie set) the first time a route calls :func:`ensure`
  or stores something in the session.
- The dict is for data that changes rarely, such as who is logged in; it is
  written whole, so two concurrent requests that both change it keep the
  later one. A value that concurrent requests change, like a counter, is a
  session-scoped key changed atomically in the store (``incr``), never a
  rewrite of the whole session (the bug of flask-session #71).
- :func:`regenerate` gives the session a new id (on login, against session
  fixation); :func:`destroy` deletes it from the store (on logout), so a
  replayed cookie is dead.

The store is read in a ``before_request`` hook, not in ``open_session``:
Quart opens the session before its error handlers apply, so a store that is
down would there be a bare 500. If the store is down the hook leaves the
session unloaded, and only routes that need it fail, with the usual JSON 503,
when they load it themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections import OrderedDict
from typing import Any

from flask.sessions import SecureCookieSession
from itsdangerous import BadSignature, URLSafeSerializer
from quart import Quart, Response
from quart.globals import request_ctx
from quart.sessions import SessionInterface, SessionMixin
from quart.wrappers import BaseRequestWebsocket
from werkzeug.wrappers import Response as WerkzeugResponse

from qapp.errors import RETRY_AFTER
from qapp.state import (
    ConfigurationError,
    Store,
    StoreError,
    StoreUnavailable,
    check_ttl,
    dumps,
    get_store,
)

__all__ = [
    "ServerSession",
    "StoreSessionInterface",
    "current",
    "destroy",
    "ensure",
    "init_app",
    "load",
    "regenerate",
    "save",
    "scoped",
    "scoped_key",
]

log = logging.getLogger(__name__)

#: Random bytes in a session id (256 bits; DESIGN asks for at least 128).
ID_BYTES = 32
#: What a session id looks like: ``secrets.token_urlsafe(32)``.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
#: Idle lifetime of a session in seconds, renewed on each request that uses it.
DEFAULT_TTL = 7 * 24 * 3600.0
#: A worker renews a session's ttl at most once per this fraction of it, so an
#: idle session lives between 0.9 and 1 × ``SESSION_TTL`` after its last request.
RENEW_EVERY = 0.1
#: Sessions whose last renewal a worker remembers (oldest forgotten first).
RENEWALS_KEPT = 10_000
#: Where a worker keeps those times, in ``app.extensions``: process state, a
#: cache of what it already wrote, never the truth (that is the store's ttl).
RENEWALS = "qapp.sessions.renewals"
#: itsdangerous salt: a signature made for anything else is no session id.
SALT = "qapp-session-id"

#: Names of session-scoped values, registered by :func:`scoped` at import. They
#: are renewed with the session and deleted with it.
_SCOPED: set[str] = set()


def scoped(name: str) -> str:
    """Register ``name`` as a session-scoped value and return it.

    Call it at import time, once per name, from the module that uses it.
    """
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"bad session-scoped name {name!r}")
    _SCOPED.add(name)
    return name


def data_key(sid: str) -> str:
    """The store key of a session's data."""
    return f"session:{sid}"


def _scoped_key(sid: str, name: str) -> str:
    return f"session:{sid}:{name}"


class ServerSession(SecureCookieSession):
    """A session whose data lives in the store; the cookie names it by a signed id.

    ``sid`` is None until the session exists in the store. ``candidate`` is the
    id the cookie offered, checked for its signature but not yet found in the
    store.
    """

    def __init__(self, candidate: str | None = None) -> None:
        super().__init__()
        self.candidate = candidate
        self.sid: str | None = None
        self.loaded = False
        #: A new id was made in this request: the answer sets the cookie.
        self.issue_cookie = False
        #: The session was destroyed: the answer deletes the cookie.
        self.drop_cookie = False


class StoreSessionInterface(SessionInterface):
    """Quart's session hooks for :class:`ServerSession`: they only sign and read cookies.

    All store I/O happens in the hook and helpers of this module, inside the
    request, where store errors become JSON answers.
    """

    def serializer(self, app: Quart) -> URLSafeSerializer:
        """The signer of session ids: HMAC-SHA256 keyed by the app's secret key."""
        keys: list[str | bytes] = list(app.config.get("SECRET_KEY_FALLBACKS") or [])
        # itsdangerous signs with the last key and accepts all of them.
        keys.append(app.secret_key)  # type: ignore[arg-type]
        return URLSafeSerializer(
            keys,  # type: ignore[arg-type]
            salt=SALT,
            signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
        )

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> ServerSession:
        cookies, name = request.cookies, self.get_cookie_name(app)
        # Not cookies.get(name): werkzeug's get raises and catches a KeyError
        # when the cookie is missing, on every request of a client without one.
        cookie = cookies[name] if name in cookies else None  # noqa: SIM401
        candidate = None
        if cookie:
            try:
                value = self.serializer(app).loads(cookie)
            except BadSignature:
                value = None
            if isinstance(value, str) and ID_PATTERN.fullmatch(value):
                candidate = value
        return ServerSession(candidate)

    async def save_session(
        self,
        app: Quart,
        session: SessionMixin,
        response: Response | WerkzeugResponse | None,
    ) -> None:
        if response is None or not isinstance(session, ServerSession):
            return
        if session.accessed:
            response.vary.add("Cookie")
        if session.loaded and session.modified:
            # A route changed the dict without calling save(); save it now.
            try:
                await save()
            except StoreError as exc:
                log.warning("session not saved: %s", exc)
                _turn_into_503(response)
                return
        options: dict[str, Any] = {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "samesite": self.get_cookie_samesite(app),
            "httponly": self.get_cookie_httponly(app),
            "partitioned": self.get_cookie_partitioned(app),
        }
        name = self.get_cookie_name(app)
        if session.issue_cookie and session.sid is not None:
            value = self.serializer(app).dumps(session.sid)
            expires = self.get_expiration_time(app, session)
            response.set_cookie(name, value, expires=expires, **options)
            response.vary.add("Cookie")
        elif session.drop_cookie:
            response.delete_cookie(name, **options)
            response.vary.add("Cookie")


def _turn_into_503(response: Response | WerkzeugResponse) -> None:
    # The answer was already built; the client must not think its change was kept.
    response.status_code = 503
    response.set_data(
        dumps({"error": "store_unavailable", "message": "the session could not be saved"})
    )
    response.headers["Content-Type"] = "application/json"
    response.headers["Retry-After"] = str(RETRY_AFTER)


def current() -> ServerSession:
    """The current request's session."""
    session = request_ctx.session
    if not isinstance(session, ServerSession):
        raise RuntimeError("qapp.sessions is not installed on this app (sessions.init_app)")
    return session


def _store_and_ttl() -> tuple[Store, float]:
    from quart import current_app

    ttl: float = current_app.config["SESSION_TTL"]
    return get_store("session"), ttl


def _renewals() -> OrderedDict[str, float]:
    from quart import current_app

    renewals: OrderedDict[str, float] = current_app.extensions.setdefault(RENEWALS, OrderedDict())
    return renewals


def _renewal_due(sid: str, ttl: float) -> bool:
    """True unless this worker renewed ``sid`` within the last ``RENEW_EVERY`` of its ttl.

    Renewing is a store write per key; doing it on every request made each
    request with a cookie pay two writes to move an expiry a week away by a
    few milliseconds.
    """
    last = _renewals().get(sid)
    return last is None or time.monotonic() - last >= ttl * RENEW_EVERY


def _renewed(sid: str) -> None:
    renewals = _renewals()
    renewals[sid] = time.monotonic()
    renewals.move_to_end(sid)
    while len(renewals) > RENEWALS_KEPT:
        renewals.popitem(last=False)


async def load() -> ServerSession:
    """Read the current session from the store (once per request) and renew its ttl."""
    session = current()
    if session.loaded:
        return session
    if session.candidate is not None:
        store, ttl = _store_and_ttl()
        data = await store.get(data_key(session.candidate))
        if isinstance(data, dict):
            session.sid = session.candidate
            session.update(data)
            if _renewal_due(session.sid, ttl):
                # Sliding expiry: the data and every scoped value live on together.
                keys = [data_key(session.sid), *(_scoped_key(session.sid, n) for n in _SCOPED)]
                await asyncio.gather(*(store.expire(key, ttl) for key in keys))
                _renewed(session.sid)
    session.loaded = True
    session.modified = False
    return session


async def ensure() -> str:
    """Return the current session's id, creating the session in the store if needed."""
    session = await load()
    if session.sid is None:
        store, ttl = _store_and_ttl()
        sid = secrets.token_urlsafe(ID_BYTES)
        # ``add``: a (vanishingly unlikely) clash can never take over a live session.
        while not await store.add(data_key(sid), dict(session), ttl=ttl):
            sid = secrets.token_urlsafe(ID_BYTES)
        session.sid = sid
        session.issue_cookie = True
        session.drop_cookie = False
        session.modified = False
    return session.sid


async def save() -> None:
    """Write the current session's dict to the store now."""
    session = await load()
    if session.sid is None:
        await ensure()
        return
    store, ttl = _store_and_ttl()
    # Rewrite only a session that is still there: a logout that happened
    # meanwhile in another request must not be undone by this write.
    if await store.expire(data_key(session.sid), ttl):
        await store.set(data_key(session.sid), dict(session), ttl=ttl)
        session.modified = False
    else:
        log.info("session ended while a request was changing it; change dropped")
        _forget(session)


async def regenerate(**changes: Any) -> str:
    """Move the current session, with ``changes`` applied, to a new id; return the id.

    Called on login (``regenerate(user=name)``), so that an id known before
    login (planted, or seen by someone else) is worth nothing after it. An
    increment that lands on the old id while it moves is lost with the old id.

    All or nothing as far as the client can tell: if a store call fails, the
    error is raised and the session is left in memory as it was, so the
    response hook writes nothing and sets no cookie, even if the store is
    back by then. A new id already written stays unused in the store until
    its ttl ends; it never reached the client.
    """
    session = await load()
    old, before = session.sid, dict(session)
    flags = (session.issue_cookie, session.drop_cookie, session.modified)
    try:
        session.update(changes)
        session.sid = None
        new = await ensure()
        if old is not None:
            store, ttl = _store_and_ttl()
            for name in _SCOPED:
                value = await store.get(_scoped_key(old, name))
                if value is not None:
                    await store.set(_scoped_key(new, name), value, ttl=ttl)
            await _delete_all(store, old)
    except BaseException:
        session.clear()
        session.update(before)
        session.sid = old
        session.issue_cookie, session.drop_cookie, session.modified = flags
        raise
    return new


async def destroy() -> None:
    """Delete the current session from the store and tell the client to drop the cookie."""
    session = await load()
    if session.sid is not None:
        store, _ = _store_and_ttl()
        await _delete_all(store, session.sid)
    _forget(session)


def _forget(session: ServerSession) -> None:
    session.clear()
    session.sid = None
    session.issue_cookie = False
    session.drop_cookie = True
    session.modified = False


async def _delete_all(store: Store, sid: str) -> None:
    keys = [data_key(sid), *(_scoped_key(sid, n) for n in _SCOPED)]
    await asyncio.gather(*(store.delete(key) for key in keys))


async def scoped_key(name: str, *, create: bool) -> str | None:
    """The store key of the current session's value ``name``.

    With ``create`` the session is created if needed; without it a client
    that has no session gets None (and nothing is written).
    """
    if name not in _SCOPED:
        raise KeyError(f"{name!r} is not registered with sessions.scoped()")
    session = await load()
    sid = await ensure() if create else session.sid
    return None if sid is None else _scoped_key(sid, name)


def _as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def init_app(app: Quart) -> None:
    """Keep ``app``'s sessions in its session store; cookies HttpOnly and SameSite=Lax.

    Config: ``SESSION_TTL`` (seconds, default a week) and Quart's
    ``SESSION_COOKIE_*`` keys; ``SESSION_COOKIE_SECURE`` (also
    ``QAPP_SESSION_COOKIE_SECURE=1``) marks the cookie Secure for HTTPS.
    """
    ttl = check_ttl(app.config.get("SESSION_TTL", DEFAULT_TTL))
    if ttl is None:
        raise ConfigurationError("SESSION_TTL must be a positive number of seconds")
    app.config["SESSION_TTL"] = ttl
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    app.config["SESSION_COOKIE_SECURE"] = _as_bool(app.config.get("SESSION_COOKIE_SECURE"))
    app.session_interface = StoreSessionInterface()  # type: ignore[assignment]

    @app.before_request
    async def load_session() -> None:
        # Only a cookie with a good signature costs a store read.
        try:
            await load()
        except StoreUnavailable:
            # Not every route needs the session: the page, /health and the
            # process-local counters still answer. A route that does need it
            # calls load() (or ensure()) again, which retries the store and
            # answers 503 if it is still down.
            log.debug("session store unavailable; session not loaded")
