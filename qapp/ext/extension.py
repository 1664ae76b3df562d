"""The Quart extension: ``Qapp(app)`` gives an app its stores, sessions and users.

In the Flask-extension pattern: ``qapp = Qapp(app)``, or ``qapp = Qapp()``
then ``qapp.init_app(app)`` in an app factory. The object holds only
configuration (the user loader, the session values); each app's state lives
in ``app.extensions["qapp"]``, a :class:`QappState`, and each worker process
opens its own connections in ``before_serving`` and closes them in
``after_serving``, inside its own event loop.

Configuration: the ``QAPP_*`` keys of ``app.config``, each read once when
the extension is installed, with the environment variable of the same name
as the fallback (:mod:`qapp.ext.settings` holds the rule and the keys, and
docs/settings.md lists them all). Arguments to :class:`Qapp` win.

Names that share a URL share one store and one connection pool. A name
that is not configured is the default store, so ``store("audit")`` works
before anyone gives the audit log a home of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from quart import Quart

from qapp.ext import (
    cache,
    errors,
    fastpath,
    origin,
    ratelimit,
    ratelimit_default,
    session_cookie,
    sessions,
    users,
)
from qapp.ext import metrics as metrics_route
from qapp.ext import settings as qapp_settings
from qapp.ext.context import QappState, TokenLoader, UserLoader, Users, state_of
from qapp.state import ConfigurationError, Store, StoreUnavailable, redact, store_from_url
from qapp.store import metrics
from qapp.store.extras import require

__all__ = ["Qapp"]

log = logging.getLogger(__name__)

L = TypeVar("L", bound=UserLoader)
T = TypeVar("T", bound=TokenLoader)


class Qapp:
    """qapp on a Quart app: stores per worker, server-side sessions, ``g.user``.

    Args:
        app: the app to install on now; or call :meth:`init_app` later.
        stores: store name -> URL, overriding the ``QAPP_*_URL`` config keys.
        sessions: install server-side sessions (default: ``QAPP_SESSIONS``, True).
        session_ttl: idle lifetime of a session in seconds (``QAPP_SESSION_TTL``).
        session_values: names of per-session values changed atomically with
            ``session.incr(name)``; they live and die with their session.
    """

    def __init__(
        self,
        app: Quart | None = None,
        *,
        stores: Mapping[str, str] | None = None,
        sessions: bool | None = None,
        session_ttl: float | None = None,
        session_values: Iterable[str] = (),
    ) -> None:
        self._stores = dict(stores or {})
        self._sessions = sessions
        self._session_ttl = session_ttl
        self.session_values = frozenset(sessions_names(session_values))
        self._users = Users()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Quart) -> None:
        """Install on ``app``: URLs are checked now, connections are made per worker.

        Raises:
            ConfigurationError: a store URL is malformed or names no known backend,
                or a feature asked for is not installed (:class:`~qapp.store.extras.MissingExtra`).
        """
        # Before anything is made (the instance folder, the secret key).
        if qapp_settings.as_bool(qapp_settings.setting(app.config, "QAPP_METRICS")):
            require("metrics", "QAPP_METRICS (/metrics)")
        found = qapp_settings.read(
            app, stores=self._stores, sessions=self._sessions, session_ttl=self._session_ttl
        )
        by_url: dict[str, Store] = {}
        stores: dict[str, Store] = {}
        for name, url in found.urls.items():
            if url not in by_url:
                by_url[url] = store_from_url(url)
            stores[name] = by_url[url]
        app.extensions["qapp"] = QappState(
            stores,
            found.session_ttl,
            self.session_values,
            self._users,
            anonymous_ttl=found.anonymous_ttl,
            session_quota=found.session_quota,
            trusted_proxies=ratelimit.trusted_proxies(found.trusted_proxies),
            ipv6_prefix=found.ipv6_prefix,
            settings=found,
        )
        # Read even with the check off: a bad entry fails at startup either way.
        errors.install_handlers(app)
        if found.fast_path:
            fastpath.install(app)
        if found.metrics:
            metrics_route.install(app, found.metrics_token)
            for store in by_url.values():
                metrics.instrument(store)
        ratelimit.install(app)
        if found.ratelimit_default is not None and found.ratelimit_enabled:
            ratelimit_default.install(app, found.ratelimit_default)
        if found.cross_site_check:
            origin.install(app, found.trusted_origins)
        if found.session_ttl is not None:
            session_cookie.install(app)
        users.install(app)

        @app.before_serving
        async def connect_stores() -> None:
            for url, store in by_url.items():
                if store.scope == "process":
                    log.warning(
                        "store %s is process-local: with several workers each has its own "
                        "copy, and 'shared' state is not shared",
                        redact(url),
                    )
                try:
                    await store.connect()
                except StoreUnavailable as exc:
                    log.warning(
                        "store %s unavailable at startup (%s); will retry", redact(url), exc
                    )

        @app.after_serving
        async def close_stores() -> None:
            for store in by_url.values():
                await store.close()

    def store(self, name: str = "default") -> Store:
        """The current app's store called ``name`` (the default store if not configured)."""
        return state_of().store(name)

    #: Limit a route, e.g. ``@qapp.rate_limit("5/minute")``: :func:`qapp.ext.ratelimit.rate_limit`.
    rate_limit = staticmethod(ratelimit.rate_limit)

    #: Leave a route out of ``QAPP_RATELIMIT_DEFAULT``, e.g. ``@qapp.exempt``:
    #: :func:`qapp.ext.ratelimit_default.exempt`.
    exempt = staticmethod(ratelimit_default.exempt)

    #: Leave every route of a blueprint out of ``QAPP_RATELIMIT_DEFAULT``:
    #: :func:`qapp.ext.ratelimit_default.exempt_blueprint`.
    exempt_blueprint = staticmethod(ratelimit_default.exempt_blueprint)

    #: Keep an async function's values in the app's store, each computed once by
    #: every worker, e.g. ``@qapp.cached(ttl=60, stale=30)``: :func:`qapp.ext.cache.cached`.
    cached = staticmethod(cache.cached)

    #: Let cross-site requests with the session cookie reach a route (an OIDC form_post
    #: callback), e.g. ``@qapp.cross_site_exempt``: :func:`qapp.ext.origin.cross_site_exempt`.
    cross_site_exempt = staticmethod(origin.cross_site_exempt)

    def user_loader(self, loader: L) -> L:
        """Register ``async def load(user_id) -> user or None``; it fills ``g.user`` per request."""
        self._users.load = loader
        return loader

    def token_loader(self, loader: T) -> T:
        """Register ``async def load(token) -> user or None`` for ``Authorization: Bearer``.

        A request with a bearer token is then authenticated by it alone: the
        loader's user fills ``g.user``, no session cookie is read or set, and
        a token the loader does not know (None) is a JSON 401.
        """
        self._users.load_token = loader
        return loader

    async def login_user(self, user_id: users.UserId, *, remember: bool = False) -> Any:
        """Log ``user_id`` in: see :func:`qapp.ext.users.login_user`."""
        return await users.login_user(user_id, remember=remember)

    async def logout_user(self) -> None:
        """Log out: see :func:`qapp.ext.users.logout_user`."""
        await users.logout_user()

    async def logout_everywhere(self, user_id: users.UserId) -> None:
        """End every session of ``user_id``: see :func:`qapp.ext.users.logout_everywhere`."""
        await users.logout_everywhere(user_id)


def sessions_names(names: Iterable[str]) -> list[str]:
    """Check names of per-session values: lowercase letters, digits and ``_``."""
    checked = list(names)
    for name in checked:
        if not isinstance(name, str) or not sessions.VALUE_NAME.fullmatch(name):
            raise ConfigurationError(f"bad session value name {name!r}: use [a-z0-9_]+")
    return checked
