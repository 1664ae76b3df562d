"""Server-side sessions: the cookie holds a signed random id, the data lives in a Store.

Quart's default session travels in the cookie: about 4 KB at most, readable by
the client, and every request writes back its own copy, so concurrent
requests overwrite each other. Here the cookie carries only a random id
(256 bits), signed with itsdangerous as Quart signs its cookies, and the
data lives in the ``session`` store as JSON, with a sliding ttl renewed by
the requests that present the cookie (by each worker at most once per
tenth of the ttl). Quart's ``session`` works as before; it is a
:class:`ServerSession`, with async methods for what a cookie session cannot do.

Keys, in the ``session`` namespace of the session store::

    <id>             the session's data (a JSON object)
    <id>:<name>      a per-session value, e.g. a counter (``session.incr(name)``)

and in its ``session-users`` namespace, one key per user who logged in::

    <s|i>:<user id>  the user's login generation (:func:`qapp.ext.users.logout_everywhere`)

Rules:

- An id is adopted only if its signature is good *and* the store holds it.
  An unknown, expired or tampered id starts a fresh, empty session; its id
  is always new and random, never the one the client offered.
- Nothing is written for a client who never needs a session: the id is
  created (and the cookie set) the first time a route stores something.
- The dict is for data that changes rarely, such as who is logged in; it is
  written whole, so two concurrent requests that both change it keep the
  later one. A value that concurrent requests change, like a counter, is a
  per-session value changed atomically in the store (:meth:`ServerSession.incr`),
  never a rewrite of the whole session (the bug of flask-session #71).
- A remembered session (``login_user(..., remember=True)``, or Quart's
  ``session.permanent``) has a cookie that lasts as long as the session's
  ttl, and is set again with a new expiry whenever the ttl is renewed;
  any other cookie ends with the browser.
- :meth:`ServerSession.regenerate` gives the session a new id (on login,
  against session fixation); :meth:`ServerSession.destroy` deletes it from
  the store (on logout), so a replayed cookie is dead.

The cookie itself is :mod:`qapp.ext.session_cookie`'s. The store is read in
a ``before_request`` hook (and a ``before_websocket`` one, so that a
websocket handler sees the session its handshake's cookie names), not in
``open_session``:
Quart opens the session before its error handlers apply, so a store that is
down would there be a bare 500. If the store is down the hook leaves the
session unloaded, and only routes that need it fail, with the usual JSON 503,
when they load it themselves.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict
from typing import Any, cast

from quart import session as quart_session
from quart.globals import request_ctx, websocket_ctx
from quart.sessions import SecureCookieSession

from qapp.ext import ratelimit
from qapp.ext.context import QappState, state_of
from qapp.state import JSONValue, Namespace, Store

__all__ = [
    "ID_BYTES",
    "ID_PATTERN",
    "SALT",
    "USER_KEY",
    "ServerSession",
    "context_session",
    "current",
    "generation_key",
    "generations",
    "session",
]

log = logging.getLogger(__name__)

#: Random bytes in a session id (256 bits).
ID_BYTES = 32
#: What a session id looks like: ``secrets.token_urlsafe(32)``.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
#: What the name of a per-session value looks like.
VALUE_NAME = re.compile(r"[a-z0-9_]{1,64}")
#: A worker renews a session's ttl at most once per this fraction of it, so an
#: idle session lives between 0.9 and 1 × its ttl after its last request.
RENEW_EVERY = 0.1
#: Sessions whose last renewal a worker remembers (oldest forgotten first).
RENEWALS_KEPT = 10_000
#: itsdangerous salt: a signature made for anything else is no session id.
SALT = "qapp-session-id"
#: Where the session keeps the logged-in user's id (see :mod:`qapp.ext.users`).
USER_KEY = "_user_id"
#: True in a session whose cookie outlives the browser (``login_user(..., remember=True)``).
REMEMBER_KEY = "_remember"
#: When the user logged in (seconds since the epoch): what makes a login fresh.
LOGIN_AT_KEY = "_login_at"
#: The user's login generation when the session logged in (see :func:`generation_key`).
GENERATION_KEY = "_user_gen"
#: Where users' login generations live, in the session store.
GENERATIONS = "session-users"
#: What an answer that depends on the session must not be: kept by a shared cache.
PRIVATE = "private, no-store"


class ServerSession(SecureCookieSession):
    """Quart's ``session``, kept in the store; the cookie names it by a signed id.

    Use it as a dict for data that changes rarely; use :meth:`incr` for
    values that concurrent requests change. ``sid`` is None until the
    session exists in the store. ``candidate`` is the id the cookie offered,
    signed correctly but not yet found in the store.
    """

    def __init__(self, candidate: str | None = None) -> None:
        super().__init__()
        self.candidate = candidate
        self.sid: str | None = None
        self.loaded = False
        self.modified = False
        #: A new id was made in this request: the answer sets the cookie.
        self.issue_cookie = False
        #: The session was destroyed: the answer deletes the cookie.
        self.drop_cookie = False
        #: The request authenticated with a bearer token: no cookie is set or read.
        self.stateless = False
        #: The session's values as read with it, and as this request changed them.
        self._values: dict[str, JSONValue] = {}
        #: A user id and its login generation, when read with the session.
        self._generation: tuple[str | int, JSONValue] | None = None
        self._app_state: QappState | None = None

    # -- reads mark the answer as depending on the session ---------------------

    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.accessed = True
        return super().__contains__(key)

    # -- where it lives ----------------------------------------------------

    def _state(self) -> QappState:
        # Looked up once: a session belongs to one request of one app.
        if self._app_state is None:
            self._app_state = state_of()
        return self._app_state

    def _home(self) -> tuple[Store, float, frozenset[str]]:
        """The session store, this session's ttl now, and the app's session values.

        A session nobody has logged into lives ``anonymous_ttl``; logging in
        (:meth:`regenerate` with the user's id) gives it the full ttl.
        """
        state = self._state()
        if state.session_ttl is None:
            raise RuntimeError("server-side sessions are off for this app (QAPP_SESSIONS)")
        self.accessed = True
        store = state.store("session").namespace("session")
        ttl = state.session_ttl
        # dict.__contains__: asking for ourselves is no read by the route.
        if state.anonymous_ttl is not None and not dict.__contains__(self, USER_KEY):
            ttl = min(ttl, state.anonymous_ttl)
        return store, ttl, state.session_values

    def _keys(self, sid: str, names: frozenset[str]) -> list[str]:
        return [sid, *(f"{sid}:{name}" for name in sorted(names))]

    def _renewal_due(self, sid: str, ttl: float) -> bool:
        # Renewing is a store write per key; doing it on every request made
        # each request with a cookie pay two writes to move an expiry a week
        # away by a few milliseconds.
        last = self._state().renewals.get(sid)
        return last is None or time.monotonic() - last >= ttl * RENEW_EVERY

    def _renewed(self, sid: str) -> None:
        _remember(self._state().renewals, sid, time.monotonic())

    # -- the session's life ---------------------------------------------------

    async def load(self) -> ServerSession:
        """Read the session from the store (once per request) and renew its ttl.

        One store call (one ``MGET`` on Redis) reads the session with its
        values (``session_values``), so a route that reads one of them makes
        no second call: :meth:`value` answers what the store held when the
        session was read, or what this request itself wrote since. When this
        worker has read the session before and it named a user, the same
        call reads that user's login generation, which ``g.user`` checks.
        """
        if self.loaded:
            return self
        if self.candidate is not None:
            store, _, names = self._home()
            sid = self.candidate
            state = self._state()
            hint = state.session_users.get(sid)
            found, generation = await self._read(store, sid, names, hint)
            data = found.get(sid)
            if isinstance(data, dict):
                self.sid = sid
                super().update(data)
                self._values = {name: found.get(f"{sid}:{name}") for name in names}
                user_id = dict.get(self, USER_KEY)
                if generation is not None and generation[0] == user_id:
                    self._generation = generation
                if isinstance(user_id, str | int):
                    _remember(state.session_users, sid, user_id)
                _, ttl, _ = self._home()  # now that the data says who is logged in
                if self._renewal_due(sid, ttl):
                    # Sliding expiry: the data and every value live on together.
                    renewals = [store.expire(key, ttl) for key in self._keys(sid, names)]
                    if user_id is not None:
                        # The user's generation lives at least as long as each
                        # of the user's sessions, or logout_everywhere could
                        # find it gone and start counting again.
                        gens = generations(state)
                        renewals.append(gens.expire(generation_key(user_id), ttl))
                    await asyncio.gather(*renewals)
                    self._renewed(sid)
                    if self.remembered:
                        # A cookie that outlives the browser follows the ttl.
                        self.issue_cookie = True
        self.loaded = True
        self.modified = False
        return self

    async def _read(
        self, store: Store, sid: str, names: frozenset[str], user_id: str | int | None
    ) -> tuple[dict[str, JSONValue], tuple[str | int, JSONValue] | None]:
        """The session's keys as found (by their names in ``store``), and, if
        ``user_id`` is given, that user's login generation, read in the same call."""
        keys = self._keys(sid, names)
        root, prefix = _root_of(store)
        wanted = {prefix + key: key for key in keys}
        generation_at = None
        if user_id is not None:
            gens_root, gens_prefix = _root_of(generations(self._state()))
            if gens_root is root:
                generation_at = gens_prefix + generation_key(user_id)
                wanted[generation_at] = generation_at
        if len(wanted) == 1:
            value = await store.get(sid)
            return ({} if value is None else {sid: value}), None
        found = await root.get_many(list(wanted))
        generation = None
        if generation_at is not None and user_id is not None:
            generation = (user_id, found.pop(generation_at, None))
        return {wanted[key]: value for key, value in found.items()}, generation

    def known_generation(self, user_id: str | int) -> tuple[bool, JSONValue]:
        """``(True, generation)`` if the session's read fetched ``user_id``'s login
        generation, else ``(False, None)``."""
        if self._generation is not None and self._generation[0] == user_id:
            return True, self._generation[1]
        return False, None

    @property
    def remembered(self) -> bool:
        """True if the cookie outlives the browser: a remembered login or ``permanent``."""
        return dict.get(self, REMEMBER_KEY) is True or dict.get(self, "_permanent") is True

    def ttl(self) -> float:
        """This session's idle lifetime in seconds now (shorter before anyone logs in)."""
        return self._home()[1]

    async def ensure(self) -> str:
        """Return the session's id, creating the session in the store if needed."""
        await self.load()
        if self.sid is None:
            store, ttl, _ = self._home()
            quota = self._state().session_quota
            if quota:
                # Counted before anything is written: a refused client stores nothing.
                await ratelimit.check(quota, ratelimit.client_key(), scope="qapp.sessions.new")
            sid = secrets.token_urlsafe(ID_BYTES)
            # ``add``: a (vanishingly unlikely) clash can never take over a live session.
            while not await store.add(sid, dict(self), ttl=ttl):
                sid = secrets.token_urlsafe(ID_BYTES)
            self.sid = sid
            self._values = {}
            self.issue_cookie = True
            self.drop_cookie = False
            self.modified = False
        return self.sid

    async def save(self) -> None:
        """Write the session's dict to the store now (the response hook does it otherwise)."""
        await self.load()
        if self.sid is None:
            await self.ensure()
            return
        store, ttl, _ = self._home()
        # Rewrite only a session that is still there: a logout that happened
        # meanwhile in another request must not be undone by this write.
        if await store.expire(self.sid, ttl):
            await store.set(self.sid, dict(self), ttl=ttl)
            self.modified = False
        else:
            log.info("session ended while a request was changing it; change dropped")
            self._forget()

    async def regenerate(self, **changes: Any) -> str:
        """Move the session, with ``changes`` applied, to a new id; return the id.

        Call it on login, so that an id known before login (planted, or seen
        by someone else) is worth nothing after it. Per-session values move
        along. An increment that lands on the old id while it moves is lost
        with the old id.

        All or nothing as far as the client can tell: if a store call fails,
        the error is raised and the session is left in memory as it was, so
        the response hook writes nothing and sets no cookie, even if the
        store is back by then. A new id already written stays unused in the
        store until its ttl ends; it never reached the client.
        """
        await self.load()
        old, before, values = self.sid, dict(self), dict(self._values)
        flags = (self.issue_cookie, self.drop_cookie, self.modified)
        try:
            super().update(changes)
            self.sid = None
            new = await self.ensure()
            if old is not None:
                store, ttl, names = self._home()
                for name in names:
                    value = self._values[name] = await store.get(f"{old}:{name}")
                    if value is not None:
                        await store.set(f"{new}:{name}", value, ttl=ttl)
                await self._delete_all(store, old, names)
        except BaseException:
            super().clear()
            super().update(before)
            self.sid, self._values = old, values
            self.issue_cookie, self.drop_cookie, self.modified = flags
            raise
        return new

    async def destroy(self) -> None:
        """Delete the session from the store and tell the client to drop the cookie."""
        await self.load()
        if self.sid is not None:
            store, _, names = self._home()
            await self._delete_all(store, self.sid, names)
        self._forget()

    def _forget(self) -> None:
        if self.sid is not None:
            self._state().session_users.pop(self.sid, None)
        super().clear()
        self._values = {}
        self._generation = None
        self.sid = None
        self.issue_cookie = False
        self.drop_cookie = True
        self.modified = False

    async def _delete_all(self, store: Store, sid: str, names: frozenset[str]) -> None:
        await asyncio.gather(*(store.delete(key) for key in self._keys(sid, names)))

    # -- per-session values, changed atomically ----------------------------------

    def _value_home(self, name: str) -> tuple[Store, float]:
        store, ttl, names = self._home()
        if name not in names:
            raise KeyError(f"{name!r} is not a session value: list it in Qapp(session_values=...)")
        return store, ttl

    async def incr(self, name: str, delta: int = 1) -> int:
        """Add ``delta`` to this session's value ``name`` atomically; return the new value.

        100 concurrent ``incr`` from one client add exactly 100, on any
        number of workers: no read of the whole session, no rewrite of it.
        The session is created if the client has none.
        """
        store, ttl = self._value_home(name)
        sid = await self.ensure()
        # The ttl applies when the increment creates the key; after that the
        # session renews it on each request, together with the session itself.
        value = self._values[name] = await store.incr(f"{sid}:{name}", delta, ttl=ttl)
        return value

    async def value(self, name: str) -> JSONValue:
        """This session's value ``name``, or None; never creates a session."""
        store, _ = self._value_home(name)
        await self.load()
        if self.sid is None:
            return None
        if name in self._values:
            return self._values[name]
        return await store.get(f"{self.sid}:{name}")

    async def set_value(self, name: str, value: JSONValue) -> None:
        """Set this session's value ``name``, creating the session if needed."""
        store, ttl = self._value_home(name)
        sid = await self.ensure()
        await store.set(f"{sid}:{name}", value, ttl=ttl)
        self._values[name] = value


#: Quart's ``session`` proxy, typed as what it is with qapp: ``await session.incr("n")``
#: type-checks. A proxy to the current request's session, not a value of its own.
session = cast(ServerSession, quart_session)


def _remember(memory: OrderedDict[str, Any], sid: str, value: Any) -> None:
    """Note ``value`` for ``sid`` in a worker's memory of at most :data:`RENEWALS_KEPT` sessions."""
    memory[sid] = value
    memory.move_to_end(sid)
    while len(memory) > RENEWALS_KEPT:
        memory.popitem(last=False)


def _root_of(store: Store) -> tuple[Store, str]:
    """The store that ``store`` is a namespace of (itself if none), and its keys' prefix there."""
    prefix = ""
    while isinstance(store, Namespace):
        prefix = store.prefix + prefix
        store = store.store
    return store, prefix


def generations(state: QappState) -> Store:
    """Where the users' login generations live: a namespace of the session store."""
    return state.store("session").namespace(GENERATIONS)


def generation_key(user_id: str | int) -> str:
    """The key of a user's login generation; ``7`` and ``"7"`` are different users."""
    return f"i:{user_id}" if isinstance(user_id, int) else f"s:{user_id}"


def context_session() -> Any:
    """The session Quart opened for the current request or websocket, whatever its kind."""
    try:
        return request_ctx.session
    except RuntimeError:
        # Not in a request: a websocket has a session of its own, opened
        # from the cookies of its handshake (else this raises in turn).
        return websocket_ctx.session


def current() -> ServerSession:
    """The current request's (or websocket's) session."""
    session = context_session()
    if not isinstance(session, ServerSession):
        raise RuntimeError("server-side sessions are not installed on this app: Qapp(app)")
    return session
