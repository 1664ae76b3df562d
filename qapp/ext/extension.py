"""The Quart extension: ``Qapp(app)`` gives an app its stores, sessions and users.

In the Flask-extension pattern: ``qapp = Qapp(app)``, or ``qapp = Qapp()``
then ``qapp.init_app(app)`` in an app factory. The object holds only
configuration (the user loader, the session values); each app's state lives
in ``app.extensions["qapp"]``, a :class:`QappState`, and each worker process
opens its own connections in ``before_serving`` and closes them in
``after_serving``, inside its own event loop.

Configuration, read from ``app.config`` (arguments to :class:`Qapp` win):

==========================  ===============================  =============================
key                         default                          meaning
==========================  ===============================  =============================
``QAPP_STORE_URL``          file ``qapp.db`` in the app's    the default store
                            instance folder (SQLite)
``QAPP_SESSION_STORE_URL``  ``QAPP_STORE_URL``               where sessions live
``QAPP_CACHE_STORE_URL``    ``QAPP_STORE_URL``               for caches
``QAPP_STORES``             ``{}``                           more stores: name → URL
``QAPP_SESSIONS``           ``True``                         server-side sessions
``QAPP_SESSION_TTL``        a week                           a session's idle lifetime (s)
``QAPP_ANONYMOUS_``         an hour                          the same, until a user logs
``SESSION_TTL``                                              in ("off": the full ttl)
``QAPP_SESSION_QUOTA``      ``"200/hour"``                   new sessions per client
``QAPP_SECRET_KEY``         see below                        signs session ids (≥ 32 bytes)
``QAPP_TRUSTED_PROXIES``    none                             whose ``X-Forwarded-For`` to
                                                             believe (ratelimit, quotas)
``QAPP_CROSS_SITE_CHECK``   ``True``                         403 for cross-site unsafe
                                                             requests (:mod:`.origin`)
``QAPP_FAST_PATH``          ``True``                         Quart's request handling with
                                                             fewer tasks (:mod:`.fastpath`)
``QAPP_METRICS``            ``False``                        count requests and store calls;
                                                             serve ``/metrics`` (:mod:`.metrics`)
``QAPP_METRICS_TOKEN``      none                             who may read ``/metrics`` from
                                                             off the loopback address
==========================  ===============================  =============================

A key missing from ``app.config`` is read from the environment variable of
the same name. Sessions are signed with ``app.secret_key``, else
``QAPP_SECRET_KEY``, else a key generated once in the instance folder
(owner-only), so that every worker signs alike.

Names that share a URL share one store and one connection pool. A name
that is not configured is the default store, so ``store("audit")`` works
before anyone gives the audit log a home of its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from quart import Quart

from qapp import metrics
from qapp.ext import cache, errors, fastpath, origin, ratelimit, session_cookie, sessions, users
from qapp.ext import metrics as metrics_route
from qapp.ext.context import QappState, UserLoader, Users, state_of
from qapp.ext.secret import SECRET_FILE, check_secret, load_or_create_secret
from qapp.extras import require
from qapp.ratelimit import parse_limit
from qapp.state import (
    ConfigurationError,
    Store,
    StoreUnavailable,
    check_ttl,
    redact,
    store_from_url,
)

__all__ = ["DEFAULT_SESSION_TTL", "Qapp"]

log = logging.getLogger(__name__)

#: Idle lifetime of a session in seconds, renewed while it is used.
DEFAULT_SESSION_TTL = 7 * 24 * 3600.0

#: Idle lifetime of a session nobody has logged into (``QAPP_ANONYMOUS_SESSION_TTL``).
ANONYMOUS_TTL = 3600.0

#: New sessions one client may create (``QAPP_SESSION_QUOTA``; "" or "off": no quota).
SESSION_QUOTA = "200/hour"

#: Store names with a config key of their own; any other name comes from QAPP_STORES.
NAMED_URLS = {"session": "QAPP_SESSION_STORE_URL", "cache": "QAPP_CACHE_STORE_URL"}

L = TypeVar("L", bound=UserLoader)


def _setting(app: Quart, key: str) -> Any:
    """``app.config[key]``, else the environment variable of that name, else None."""
    value = app.config.get(key)
    return value if value not in (None, "") else os.environ.get(key) or None


def _urls(app: Quart, overrides: Mapping[str, str]) -> dict[str, str]:
    config = app.config
    default = overrides.get("default") or _setting(app, "QAPP_STORE_URL")
    if not default:
        folder = Path(app.instance_path)
        # The folder holds user data (sessions, password hashes): owner only.
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        default = f"sqlite://{folder / 'qapp.db'}"
    urls = {"default": default}
    extra = config.get("QAPP_STORES") or {}
    if not isinstance(extra, Mapping):
        raise ConfigurationError("QAPP_STORES must map store names to URLs")
    urls.update({str(k): str(v) for k, v in extra.items()})
    for name, key in NAMED_URLS.items():
        urls[name] = overrides.get(name) or _setting(app, key) or urls.get(name) or default
    urls.update({k: v for k, v in overrides.items() if v})
    return urls


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
                or a feature asked for is not installed (:class:`~qapp.extras.MissingExtra`).
        """
        # Before anything is made (the instance folder, the secret key).
        if metrics.wanted(_setting(app, metrics.ENV)):
            require("metrics", "QAPP_METRICS (/metrics)")
        by_url: dict[str, Store] = {}
        stores: dict[str, Store] = {}
        for name, url in _urls(app, self._stores).items():
            if url not in by_url:
                by_url[url] = store_from_url(url)
            stores[name] = by_url[url]
        use_sessions = self._sessions
        if use_sessions is None:
            flag = _setting(app, "QAPP_SESSIONS")
            use_sessions = True if flag is None else _as_bool(flag)
        ttl = None
        if use_sessions:
            ttl = check_ttl(
                float(self._session_ttl or _setting(app, "QAPP_SESSION_TTL") or DEFAULT_SESSION_TTL)
            )
            if not app.secret_key:
                app.secret_key = _setting(app, "QAPP_SECRET_KEY") or load_or_create_secret(
                    Path(app.instance_path) / SECRET_FILE
                )
            check_secret(app.secret_key)
        app.extensions["qapp"] = QappState(
            stores,
            ttl,
            self.session_values,
            self._users,
            anonymous_ttl=_seconds(_setting(app, "QAPP_ANONYMOUS_SESSION_TTL"), ANONYMOUS_TTL),
            session_quota=_limit(_setting(app, "QAPP_SESSION_QUOTA"), SESSION_QUOTA),
            trusted_proxies=ratelimit.trusted_proxies(_setting(app, "QAPP_TRUSTED_PROXIES")),
        )
        errors.install_handlers(app)
        flag = _setting(app, "QAPP_FAST_PATH")
        if flag is None or _as_bool(flag):
            fastpath.install(app)
        if metrics.wanted(_setting(app, metrics.ENV)):
            metrics_route.install(app, _setting(app, metrics_route.TOKEN_KEY))
            for store in by_url.values():
                metrics.instrument(store)
        ratelimit.install(app)
        flag = _setting(app, "QAPP_CROSS_SITE_CHECK")
        if flag is None or _as_bool(flag):
            origin.install(app)
        if use_sessions:
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

    #: Keep an async function's values in the app's store, each computed once by
    #: every worker, e.g. ``@qapp.cached(ttl=60, stale=30)``: :func:`qapp.ext.cache.cached`.
    cached = staticmethod(cache.cached)

    def user_loader(self, loader: L) -> L:
        """Register ``async def load(user_id) -> user or None``; it fills ``g.user`` per request."""
        self._users.load = loader
        return loader

    async def login_user(self, user_id: str) -> Any:
        """Log ``user_id`` in: see :func:`qapp.ext.users.login_user`."""
        return await users.login_user(user_id)

    async def logout_user(self) -> None:
        """Log out: see :func:`qapp.ext.users.logout_user`."""
        await users.logout_user()


def sessions_names(names: Iterable[str]) -> list[str]:
    """Check names of per-session values: lowercase letters, digits and ``_``."""
    checked = list(names)
    for name in checked:
        if not isinstance(name, str) or not sessions.VALUE_NAME.fullmatch(name):
            raise ConfigurationError(f"bad session value name {name!r}: use [a-z0-9_]+")
    return checked


def _seconds(value: object, default: float) -> float | None:
    """A number of seconds from config; "off" (or 0) turns the limit off."""
    if value is None:
        return default
    if isinstance(value, str) and value.strip().lower() in {"", "off", "none", "0"}:
        return None
    try:
        return check_ttl(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"not a number of seconds: {value!r} ({exc})") from None


def _limit(value: object, default: str) -> str | None:
    """A rate limit from config ("200/hour"), checked now; "off" turns it off."""
    if value is None:
        value = default
    if not value or (isinstance(value, str) and value.strip().lower() in {"off", "none", "0"}):
        return None
    parse_limit(str(value))  # a bad limit fails at startup, not at the first session
    return str(value)


def _as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)
