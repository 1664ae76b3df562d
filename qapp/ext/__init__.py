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

Modules: :mod:`~qapp.ext.extension` (:class:`Qapp`), :mod:`~qapp.ext.cache`
(``cached``), :mod:`~qapp.ext.context`
(the per-app state), :mod:`~qapp.ext.sessions`, :mod:`~qapp.ext.users` and
:mod:`~qapp.ext.errors`.
"""

from __future__ import annotations

from qapp.ext.cache import Cached, Result, StillComputing, cached
from qapp.ext.client import client_address, client_key
from qapp.ext.context import QappState, get_store, state_of
from qapp.ext.errors import RETRY_AFTER, error_response
from qapp.ext.extension import Qapp
from qapp.ext.login_view import next_url
from qapp.ext.origin import CrossSiteRequest, cross_site_exempt
from qapp.ext.ratelimit import RateLimited, rate_limit
from qapp.ext.ratelimit import check as check_rate_limit
from qapp.ext.ratelimit import refund as refund_rate_limit
from qapp.ext.ratelimit_default import exempt as rate_limit_exempt
from qapp.ext.ratelimit_default import exempt_blueprint as rate_limit_exempt_blueprint
from qapp.ext.session_cookie import StoreSessionInterface
from qapp.ext.sessions import ServerSession, current, session
from qapp.ext.users import (
    fresh_login_required,
    is_fresh,
    login_required,
    login_user,
    logout_everywhere,
    logout_user,
)

__all__ = [
    "RETRY_AFTER",
    "Cached",
    "CrossSiteRequest",
    "Qapp",
    "QappState",
    "RateLimited",
    "Result",
    "ServerSession",
    "StillComputing",
    "StoreSessionInterface",
    "cached",
    "check_rate_limit",
    "client_address",
    "client_key",
    "cross_site_exempt",
    "current",
    "error_response",
    "fresh_login_required",
    "get_store",
    "is_fresh",
    "login_required",
    "login_user",
    "logout_everywhere",
    "logout_user",
    "next_url",
    "rate_limit",
    "rate_limit_exempt",
    "rate_limit_exempt_blueprint",
    "refund_rate_limit",
    "session",
    "state_of",
]
