"""Who the user is: an id in the server-side session, the user itself in ``g.user``.

Three homes meet here. The user's record lives wherever the app keeps it
(usually a store); *who is logged in* is user state, an id in the session;
*the user of this request* is request state, ``g.user``, filled once per
request by the app's ``@qapp.user_loader`` and gone with the request.

- :func:`login_user` moves the session to a new id with the user's id in it
  (no session fixation), :func:`logout_user` destroys the session.
- :func:`login_required` answers 401 without a user. If the store was down
  when the request began, it asks again, and a store still down is a 503,
  never a wrong 401.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from quart import Quart, Response, g
from werkzeug.exceptions import Unauthorized

from qapp.ext.context import state_of
from qapp.ext.errors import error_response
from qapp.ext.sessions import USER_KEY, ServerSession, context_session, current
from qapp.state import StoreUnavailable

__all__ = ["USER_KEY", "LoginRequired", "login_required", "login_user", "logout_user"]


class LoginRequired(Unauthorized):
    """No user is logged in: a JSON 401 (``{"error": "unauthorized", ...}``)."""

    description = "log in first"


P = ParamSpec("P")
R = TypeVar("R")


async def _session_user() -> Any:
    """The user the session names, as the loader returns it; None for nobody."""
    state = state_of()
    if state.users.load is None or state.session_ttl is None:
        return None
    session = await current().load()
    user_id = session.get(USER_KEY) if session.sid is not None else None
    return await state.users.load(user_id) if isinstance(user_id, str) else None


def install(app: Quart) -> None:
    """Fill ``g.user`` at the start of every request and websocket of ``app``; 401 as JSON."""

    @app.errorhandler(LoginRequired)
    async def unauthorized(exc: LoginRequired) -> Response:
        return error_response(401, "unauthorized", exc.description or "log in first")

    @app.before_websocket
    @app.before_request
    async def load_user() -> None:
        g.user = None
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


def login_required(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Guard a route: without a logged-in user it answers 401 (503 if that cannot be told)."""

    @functools.wraps(view)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        if g.get("qapp_user_unknown"):
            g.user = await _session_user()
            g.qapp_user_unknown = False
        if g.get("user") is None:
            raise LoginRequired()
        return await view(*args, **kwargs)

    return guarded


async def login_user(user_id: str) -> Any:
    """Log ``user_id`` in: a new session id with the id in it; ``g.user`` is filled.

    Returns what the user loader gives for ``user_id`` (the id itself when
    the app has no loader).
    """
    await current().regenerate(**{USER_KEY: user_id})
    load = state_of().users.load
    g.user = user_id if load is None else await load(user_id)
    return g.user


async def logout_user() -> None:
    """Log out: the session is deleted from the store, the cookie dropped."""
    await current().destroy()
    g.user = None
