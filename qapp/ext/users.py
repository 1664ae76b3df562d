"""Who the user is: an id in the server-side session, the user itself in ``g.user``.

Three homes meet here. The user's record lives wherever the app keeps it
(usually a store); *who is logged in* is user state, an id in the session;
*the user of this request* is request state, ``g.user``, filled once per
request by the app's ``@qapp.user_loader`` and gone with the request.

- :func:`login_user` moves the session to a new id with the user's id in it
  (no session fixation); ``remember=True`` gives it a cookie that outlives
  the browser. :func:`logout_user` destroys the session.
- A user id is a string or an integer, and the loader gets back exactly
  what ``login_user`` was given (the session is JSON).
- :func:`login_required` answers 401 without a user (or redirects a browser
  to ``QAPP_LOGIN_VIEW``). If the store was down when the request began, it
  asks again, and a store still down is a 503, never a wrong 401.
- :func:`fresh_login_required` also wants the login to be recent
  (``QAPP_FRESH_LOGIN_TTL``), for changing a password or an e-mail address.
- :func:`logout_everywhere` ends every session of a user, on every worker:
  each session holds the user's login *generation* read at login, and a
  request whose session holds an older one than the store is logged out.
  One ``incr`` ends them all, with no scan of sessions; the generation's key
  lives as long as the user's longest session (renewed with each of them).
- ``@qapp.token_loader`` lets ``Authorization: Bearer <token>`` requests in
  without a session: the loader's user fills ``g.user``, no cookie is read
  or set, and a token it does not know is a JSON 401.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeGuard, TypeVar

from quart import Quart, Response, g, has_request_context, request, websocket
from quart.globals import request_ctx, websocket_ctx
from werkzeug.exceptions import Unauthorized

from qapp.ext.context import state_of
from qapp.ext.errors import error_response
from qapp.ext.login_view import is_url, login_redirect
from qapp.ext.sessions import (
    GENERATION_KEY,
    LOGIN_AT_KEY,
    REMEMBER_KEY,
    USER_KEY,
    ServerSession,
    context_session,
    current,
    generation_key,
    generations,
)
from qapp.state import ConfigurationError, StoreUnavailable

__all__ = [
    "USER_KEY",
    "FreshLoginRequired",
    "InvalidToken",
    "LoginRequired",
    "UserId",
    "check_user_id",
    "fresh_login_required",
    "is_fresh",
    "login_required",
    "login_user",
    "logout_everywhere",
    "logout_user",
]

#: What a user id may be: it round-trips through the session's JSON unchanged.
UserId = str | int

#: RFC 6750's b64token: what a bearer token looks like (bounded in length).
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~+/-]{1,4096}=*")


class LoginRequired(Unauthorized):
    """No user is logged in: a JSON 401 (``{"error": "unauthorized", ...}``)."""

    description = "log in first"


class FreshLoginRequired(Unauthorized):
    """The login is not recent enough: a JSON 401 (``{"error": "fresh_login_required"}``)."""

    description = "log in again to do this"


class InvalidToken(Unauthorized):
    """A bearer token the app does not know: a JSON 401 (``{"error": "invalid_token"}``)."""

    description = "the bearer token is not valid"


P = ParamSpec("P")
R = TypeVar("R")


def check_user_id(user_id: object) -> UserId:
    """Return ``user_id`` if it is a string or an integer.

    Raises:
        TypeError: anything else (a bool, a float, None, a container), which
            would not come back from the session as it went in.
    """
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise TypeError(f"a user id is a str or an int, not {type(user_id).__name__}")
    return user_id


def _is_user_id(value: object) -> TypeGuard[UserId]:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


async def _session_user() -> Any:
    """The user the session names, as the loader returns it; None for nobody.

    A session whose login generation is older than the user's (after
    :func:`logout_everywhere`) is destroyed here: it names nobody.
    """
    state = state_of()
    if state.session_ttl is None:
        return None
    session = await current().load()
    user_id = session.get(USER_KEY) if session.sid is not None else None
    if not _is_user_id(user_id):
        return None
    known, generation = session.known_generation(user_id)
    if not known:
        generation = await generations(state).get(generation_key(user_id))
    if session.get(GENERATION_KEY) != generation:
        await session.destroy()
        return None
    return user_id if state.users.load is None else await state.users.load(user_id)


def _bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer`` header; None without one."""
    headers = request.headers if has_request_context() else websocket.headers
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _make_stateless() -> None:
    """Give the current request an empty session that sets no cookie (a token request)."""
    session = ServerSession()
    session.loaded = True
    session.stateless = True
    if has_request_context():
        request_ctx.session = session
    else:
        websocket_ctx.session = session


def install(app: Quart) -> None:
    """Fill ``g.user`` at the start of every request and websocket of ``app``; 401 as JSON."""

    @app.errorhandler(LoginRequired)
    async def unauthorized(exc: LoginRequired) -> Response:
        refusal = login_redirect(_login_view())
        return refusal or error_response(401, "unauthorized", exc.description or "log in first")

    @app.errorhandler(FreshLoginRequired)
    async def not_fresh(exc: FreshLoginRequired) -> Response:
        refusal = login_redirect(_login_view())
        return refusal or error_response(401, "fresh_login_required", exc.description or "")

    @app.errorhandler(InvalidToken)
    async def invalid_token(exc: InvalidToken) -> Response:
        refusal = error_response(401, "invalid_token", exc.description or "")
        refusal.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return refusal

    @app.before_serving
    async def check_login_view() -> None:
        # Checked once the app's routes exist: a misspelt endpoint fails the
        # start, not the first browser that needs the login page.
        view = _login_view(app)
        if view is not None and not is_url(view) and view not in app.view_functions:
            raise ConfigurationError(f"QAPP_LOGIN_VIEW: no endpoint {view!r} in this app")

    @app.before_websocket
    @app.before_request
    async def load_user() -> None:
        g.user = None
        g.qapp_token = False
        load_token = state_of().users.load_token
        token = _bearer_token() if load_token is not None else None
        # /metrics has a bearer token of its own (QAPP_METRICS_TOKEN).
        if token is not None and load_token is not None and _endpoint() != "qapp_metrics":
            _make_stateless()
            user = await load_token(token) if TOKEN_PATTERN.fullmatch(token) else None
            if user is None:
                raise InvalidToken()
            g.user = user
            g.qapp_token = True
            return
        session = context_session()
        if isinstance(session, ServerSession) and session.sid is None and session.candidate is None:
            # No session, so nobody logged in: no loader call, no store read.
            return
        g.qapp_user_unknown = False
        try:
            g.user = await _session_user()
        except StoreUnavailable:
            # Who the user is cannot be told now. Routes that do not care
            # still answer; login_required asks again.
            g.qapp_user_unknown = True


def _endpoint() -> str | None:
    return request.endpoint if has_request_context() else websocket.endpoint


def _login_view(app: Quart | None = None) -> str | None:
    settings = state_of(app).settings
    return None if settings is None else settings.login_view


async def _require_user() -> None:
    if g.get("qapp_user_unknown"):
        g.user = await _session_user()
        g.qapp_user_unknown = False
    if g.get("user") is None:
        raise LoginRequired()


def login_required(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Guard a route: without a logged-in user it answers 401 (503 if that cannot be told).

    A browser (``Accept`` prefers ``text/html``) is redirected to
    ``QAPP_LOGIN_VIEW`` instead, when the app sets one.
    """

    @functools.wraps(view)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        await _require_user()
        return await view(*args, **kwargs)

    return guarded


def is_fresh() -> bool:
    """True if the current user logged in with a password less than ``QAPP_FRESH_LOGIN_TTL`` ago.

    A bearer token is never a fresh login; neither is a remembered session
    that comes back after that time.
    """
    if g.get("user") is None or g.get("qapp_token"):
        return False
    settings = state_of().settings
    login_at = current().get(LOGIN_AT_KEY)
    if settings is None or not isinstance(login_at, (int, float)):
        return False
    return 0 <= time.time() - login_at < settings.fresh_login_ttl


def fresh_login_required(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Guard a sensitive route: a user who logged in within ``QAPP_FRESH_LOGIN_TTL``.

    Without a user it answers as :func:`login_required`; with a login that
    is not fresh, a 401 ``{"error": "fresh_login_required"}`` (a browser is
    redirected to the login page).
    """

    @functools.wraps(view)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        await _require_user()
        if not is_fresh():
            raise FreshLoginRequired()
        return await view(*args, **kwargs)

    return guarded


async def login_user(user_id: UserId, *, remember: bool = False) -> Any:
    """Log ``user_id`` in: a new session id with the id in it; ``g.user`` is filled.

    ``remember=True`` gives the cookie an expiry that follows the session's
    sliding ttl, so the login survives a browser restart; otherwise the
    cookie ends with the browser. Either way the login is fresh for
    ``QAPP_FRESH_LOGIN_TTL`` seconds.

    Returns what the user loader gives for ``user_id`` (the id itself when
    the app has no loader).

    Raises:
        TypeError: ``user_id`` is neither a str nor an int.
    """
    check_user_id(user_id)
    state = state_of()
    session = current()
    if state.session_ttl is None:
        raise RuntimeError("server-side sessions are off for this app (QAPP_SESSIONS)")
    generation = await _generation_at_login(user_id, state.session_ttl)
    await session.regenerate(
        **{
            USER_KEY: user_id,
            REMEMBER_KEY: bool(remember),
            LOGIN_AT_KEY: time.time(),
            GENERATION_KEY: generation,
        }
    )
    load = state.users.load
    g.user = user_id if load is None else await load(user_id)
    return g.user


async def _generation_at_login(user_id: UserId, ttl: float) -> int:
    """The user's login generation now; its key then lives at least ``ttl`` more."""
    gens = generations(state_of())
    key = generation_key(user_id)
    # incr by 0 reads it, creating it (with the ttl) if it is missing.
    generation = await gens.incr(key, 0, ttl=ttl)
    await gens.expire(key, ttl)
    return generation


async def logout_user() -> None:
    """Log out: the session is deleted from the store, the cookie dropped."""
    await current().destroy()
    g.user = None


async def logout_everywhere(user_id: UserId) -> None:
    """End every session of ``user_id``, on every worker and host sharing the session store.

    Each of them is logged out on its next request (and its data deleted
    then). Call it when a password changes or a device is lost; a current
    request of that user is logged out at once.

    Raises:
        TypeError: ``user_id`` is neither a str nor an int.
    """
    check_user_id(user_id)
    state = state_of()
    if state.session_ttl is None:
        raise RuntimeError("server-side sessions are off for this app (QAPP_SESSIONS)")
    # A missing key starts again from 0 with the full ttl: any session of the
    # user that still held a generation renewed the key, so none is left.
    await generations(state).incr(generation_key(user_id), 1, ttl=state.session_ttl)
    if has_request_context() and isinstance(context_session(), ServerSession):
        session = current()
        if session.sid is not None and session.get(USER_KEY) == user_id:
            await logout_user()
