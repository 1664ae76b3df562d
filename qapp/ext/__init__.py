"""qapp's Quart extension: the store API on a Quart app, one object per app.

::

    from quart import Quart, g, session
    from qapp import Qapp, login_required

    app = Quart(__name__)
    app.config["QAPP_STORE_URL"] = "sqlite://instance/app.db"
    qapp = Qapp(app, session_values=["visits"])

    @app.post("/hits")
    async def hits():
        return {"hits": await qapp.store().incr("hits")}   # unique on every worker

    @app.post("/visit")
    async def visit():
        return {"visits": await session.incr("visits")}    # per client, atomic

Modules: :mod:`~qapp.ext.extension` (:class:`Qapp`), :mod:`~qapp.ext.context`
(the per-app state), :mod:`~qapp.ext.sessions`, :mod:`~qapp.ext.users` and
:mod:`~qapp.ext.errors`.
"""

from __future__ import annotations

from qapp.ext.context import QappState, get_store, state_of
from qapp.ext.errors import RETRY_AFTER, error_response
from qapp.ext.extension import Qapp
from qapp.ext.sessions import ServerSession, StoreSessionInterface, current
from qapp.ext.users import login_required, login_user, logout_user

__all__ = [
    "RETRY_AFTER",
    "Qapp",
    "QappState",
    "ServerSession",
    "StoreSessionInterface",
    "current",
    "error_response",
    "get_store",
    "login_required",
    "login_user",
    "logout_user",
    "state_of",
]
