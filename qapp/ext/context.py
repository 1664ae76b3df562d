"""Where an app's qapp state lives: ``app.extensions["qapp"]``, one :class:`QappState` per app.

Every worker process builds its own app, so this is worker state: its
stores (connected in that worker's event loop) and its session bookkeeping.
Nothing of it lives in a module global.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from quart import Quart, current_app

from qapp.ext.origin import Origin
from qapp.state import Store

__all__ = ["QappState", "Settings", "TokenLoader", "UserLoader", "Users", "get_store", "state_of"]

#: ``async def load(user_id) -> user or None``: what fills ``g.user``.
UserLoader = Callable[[Any], Awaitable[Any]]
#: ``async def load(token) -> user or None``: what fills ``g.user`` for a bearer token.
TokenLoader = Callable[[str], Awaitable[Any]]


@dataclass
class Users:
    """How an app knows its users: set by ``@qapp.user_loader``, read by every request."""

    load: UserLoader | None = None
    #: Set by ``@qapp.token_loader``: ``Authorization: Bearer`` requests use it.
    load_token: TokenLoader | None = None


@dataclass
class Settings:
    """The extension's settings of one app, as :func:`qapp.ext.settings.read` found them."""

    #: Store name -> URL; always has "default", "session" and "cache".
    urls: dict[str, str]
    #: The idle lifetime of sessions, or None when sessions are off.
    session_ttl: float | None
    anonymous_ttl: float | None
    session_quota: str | None
    #: Seconds a login stays fresh (``fresh_login_required``).
    fresh_login_ttl: float
    #: Where ``login_required`` sends a browser: an endpoint name or a URL; None: a 401.
    login_view: str | None
    trusted_proxies: str | None
    #: IPv6 clients count per network of this many bits.
    ipv6_prefix: int
    cross_site_check: bool
    #: Origins besides the app's own whose requests pass the cross-site check.
    trusted_origins: frozenset[Origin]
    fast_path: bool
    metrics: bool
    metrics_token: str | None
    #: Off: every rate limit lets everything through (``QAPP_RATELIMIT_ENABLED``).
    ratelimit_enabled: bool = True
    #: The limit of every route without one of its own, or None (``QAPP_RATELIMIT_DEFAULT``).
    ratelimit_default: str | None = None
    #: "deny" (503) or "allow" when a limit's store is down (``QAPP_RATELIMIT_ON_STORE_ERROR``).
    ratelimit_on_store_error: str = "deny"


@dataclass
class QappState:
    """One app's qapp state in one worker: its stores and session bookkeeping."""

    #: Store name -> store; names that share a URL share the object.
    stores: dict[str, Store]
    #: The idle lifetime of sessions, or None when sessions are not installed.
    session_ttl: float | None
    #: Names of the per-session values (``session.incr(name)``) this app uses.
    session_values: frozenset[str]
    #: What fills ``g.user`` from the session's user id (shared with the Qapp object).
    users: Users = field(default_factory=Users)
    #: The idle lifetime of a session nobody has logged into yet (at most ``session_ttl``).
    anonymous_ttl: float | None = None
    #: New sessions one client may create, e.g. "200/hour"; None for no quota.
    session_quota: str | None = None
    #: Proxies whose ``X-Forwarded-For`` is believed (see :mod:`qapp.ext.client`).
    trusted_proxies: tuple[Any, ...] = ()
    #: The settings ``Qapp`` read for this app (:mod:`qapp.ext.settings`).
    settings: Settings | None = None
    #: IPv6 clients' limits count per network of this many bits (see :mod:`qapp.ext.client`).
    ipv6_prefix: int = 64
    #: Session id -> when this worker last renewed it: a cache of writes already
    #: made, never the truth (that is the store's ttl). Bounded by the sessions.
    renewals: OrderedDict[str, float] = field(default_factory=OrderedDict)
    #: Session id -> the user it named when this worker last read it: lets the
    #: next read fetch that user's login generation in the same store call. A
    #: hint, never the truth (that is the session's data). Bounded likewise.
    session_users: OrderedDict[str, str | int] = field(default_factory=OrderedDict)
    #: When this worker last warned that limits let requests through on a store error.
    ratelimit_warned: float = float("-inf")

    def store(self, name: str = "default") -> Store:
        """The store called ``name``; the default store for a name not configured."""
        return self.stores.get(name) or self.stores["default"]

    def distinct_stores(self) -> list[Store]:
        """Each store once, however many names it has."""
        return list({id(s): s for s in self.stores.values()}.values())


def state_of(app: Quart | None = None) -> QappState:
    """The qapp state of ``app`` (by default the current app)."""
    target = current_app if app is None else app
    try:
        state: QappState = target.extensions["qapp"]
    except KeyError:
        raise RuntimeError("qapp is not installed on this app: call Qapp(app)") from None
    return state


def get_store(name: str = "default") -> Store:
    """The current app's store called ``name``: for blueprints, which have no Qapp object."""
    return state_of().store(name)
