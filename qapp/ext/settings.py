"""Every ``QAPP_*`` setting, read once, by one rule, in one place.

The rule: a setting is read from ``app.config``; a key that ``app.config``
does not have (or holds as ``None`` or ``""``) is read from the environment
variable of the same name. That is all the environment ever does, and it is
read here only, when :class:`~qapp.ext.Qapp` is installed (``init_app``), so a
request never looks at ``os.environ``. The demo service reads its own keys
through :func:`setting` too, so one name means one thing everywhere.

Switches take ``1``, ``true``, ``yes`` or ``on`` (any case) for on, and
limits take ``off`` (or ``none``, ``0``, ``""``) for no limit.
:data:`EXTENSION_SETTINGS` lists the extension's keys with what they mean;
docs/settings.md lists every key qapp reads, and a test keeps it whole.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quart import Quart

from qapp.ext.client import ipv6_prefix
from qapp.ext.context import Settings
from qapp.ext.origin import trusted_origins
from qapp.ext.secret import SECRET_FILE, check_secret, load_or_create_secret
from qapp.state import ConfigurationError, check_ttl, store_from_url
from qapp.store.backends.sqlite import make_instance_folder
from qapp.store.ratelimit import parse_limits
from qapp.store.values import is_on

__all__ = [
    "ANONYMOUS_TTL",
    "DEFAULT_SESSION_TTL",
    "EXTENSION_SETTINGS",
    "FRESH_LOGIN_TTL",
    "SESSION_QUOTA",
    "Settings",
    "as_bool",
    "fresh_login_ttl",
    "is_off",
    "limit",
    "read",
    "seconds",
    "setting",
]

#: Idle lifetime of a session in seconds, renewed while it is used.
DEFAULT_SESSION_TTL = 7 * 24 * 3600.0

#: Idle lifetime of a session nobody has logged into (``QAPP_ANONYMOUS_SESSION_TTL``).
ANONYMOUS_TTL = 3600.0

#: Seconds a login stays fresh for ``fresh_login_required`` (``QAPP_FRESH_LOGIN_TTL``).
FRESH_LOGIN_TTL = 600.0

#: New sessions one client may create (``QAPP_SESSION_QUOTA``; "off": no quota).
SESSION_QUOTA = "200/hour"

#: The words that turn a limit off.
OFF_WORDS = frozenset({"", "off", "none", "0", "false", "no"})

#: Store names with a key of their own; any other name comes from ``QAPP_STORES``.
NAMED_URLS = {"session": "QAPP_SESSION_STORE_URL", "cache": "QAPP_CACHE_STORE_URL"}

#: The extension's keys and what each means (the service's are in :mod:`qapp.service.config`).
EXTENSION_SETTINGS: dict[str, str] = {
    "QAPP_STORE_URL": "the default store (SQLite file qapp.db in the instance folder)",
    "QAPP_SESSION_STORE_URL": "where sessions live (QAPP_STORE_URL)",
    "QAPP_CACHE_STORE_URL": "where caches live (QAPP_STORE_URL)",
    "QAPP_STORES": "more stores: a mapping of name to URL (app.config only)",
    "QAPP_SESSIONS": "server-side sessions (on)",
    "QAPP_SESSION_TTL": "a session's idle lifetime in seconds (a week)",
    "QAPP_ANONYMOUS_SESSION_TTL": "the same until a user logs in (an hour; off: the full ttl)",
    "QAPP_SESSION_QUOTA": "new sessions per client (200/hour)",
    "QAPP_FRESH_LOGIN_TTL": "seconds a login stays fresh for fresh_login_required (600)",
    "QAPP_LOGIN_VIEW": "where login_required sends browsers: an endpoint or a URL (none: 401)",
    "QAPP_SESSION_COOKIE_SECURE": "mark the session cookie Secure (Quart's SESSION_COOKIE_SECURE)",
    "QAPP_SECRET_KEY": "signs session ids, at least 32 bytes (app.secret_key, else generated)",
    "QAPP_TRUSTED_PROXIES": "proxies whose X-Forwarded-For names the client (none)",
    "QAPP_IPV6_PREFIX": "an IPv6 client's limits count per network of this many bits (64)",
    "QAPP_CROSS_SITE_CHECK": "refuse cross-site unsafe requests that carry the cookie (on)",
    "QAPP_TRUSTED_ORIGINS": "origins besides the app's own that pass that check (none)",
    "QAPP_FAST_PATH": "Quart's request handling with fewer tasks (off; the demo turns it on)",
    "QAPP_METRICS": "count requests and store calls and serve /metrics (off)",
    "QAPP_METRICS_TOKEN": "who may read /metrics from off the loopback address (none)",
    "QAPP_RATELIMIT_ENABLED": "rate limits count and refuse; off lets everything through (on)",
    "QAPP_RATELIMIT_DEFAULT": "the limit of every route without one, e.g. 100/minute (off)",
    "QAPP_RATELIMIT_ON_STORE_ERROR": "a limit whose store is down: deny (503) or allow (deny)",
}

#: What a limit may do when its store is down.
ON_STORE_ERROR = ("deny", "allow")


def setting(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]``, else the environment variable ``key``, else None (the rule above)."""
    value = config.get(key)
    if value is None or value == "":
        return os.environ.get(key) or None
    return value


def as_bool(value: object, default: bool = False) -> bool:
    """A switch: ``1``, ``true``, ``yes`` and ``on`` (any case) are on; None is ``default``."""
    return default if value is None else is_on(value)


def is_off(value: object) -> bool:
    """True for a limit turned off: ``off``, ``none``, ``0``, ``""`` (any case), 0 or False."""
    if isinstance(value, str):
        return value.strip().lower() in OFF_WORDS
    return value is False or value == 0


def seconds(key: str, value: object, default: float | None) -> float | None:
    """A number of seconds from a setting; None when it is turned off.

    Raises:
        ConfigurationError: not a positive number of seconds.
    """
    if value is None:
        return default
    if is_off(value):
        return None
    try:
        return check_ttl(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{key}: not a number of seconds: {value!r} ({exc})") from None


def limit(key: str, value: object, default: str | None) -> str | None:
    """A rate limit from a setting ("200/hour"), checked now; None when turned off.

    Raises:
        ConfigurationError: the limit cannot be parsed.
    """
    if value is None:
        value = default
    if value is None or is_off(value):
        return None
    try:
        parse_limits(str(value))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{key}: {exc}") from None
    return str(value)


def fresh_login_ttl(value: object) -> float:
    """``QAPP_FRESH_LOGIN_TTL`` in seconds.

    Raises:
        ConfigurationError: not a positive number, or turned off.
    """
    ttl = seconds("QAPP_FRESH_LOGIN_TTL", value, FRESH_LOGIN_TTL)
    if ttl is None:
        raise ConfigurationError("QAPP_FRESH_LOGIN_TTL cannot be off: give it seconds")
    return ttl


def _urls(app: Quart, overrides: Mapping[str, str]) -> dict[str, str]:
    default = overrides.get("default") or setting(app.config, "QAPP_STORE_URL")
    if not default:
        # Made (0700: it holds sessions and password hashes) by make_instance_folder.
        default = f"sqlite://{Path(app.instance_path) / 'qapp.db'}"
    urls = {"default": str(default)}
    extra = app.config.get("QAPP_STORES") or {}
    if not isinstance(extra, Mapping):
        raise ConfigurationError("QAPP_STORES must map store names to URLs")
    urls.update({str(k): str(v) for k, v in extra.items()})
    for name, key in NAMED_URLS.items():
        urls[name] = overrides.get(name) or setting(app.config, key) or urls.get(name) or default
    urls.update({k: v for k, v in overrides.items() if v})
    return urls


def read(
    app: Quart,
    *,
    stores: Mapping[str, str] | None = None,
    sessions: bool | None = None,
    session_ttl: float | None = None,
) -> Settings:
    """Read every setting of the extension for ``app``, once; arguments of ``Qapp`` win.

    Store URLs are checked before anything is written, so a bad URL leaves
    no key file behind. With sessions on, ``app.secret_key`` is set if it was
    not: from ``QAPP_SECRET_KEY``, else from a key generated once in the
    instance folder (owner-only), so that every worker signs alike.

    Raises:
        ConfigurationError: a URL, a number, a limit or the secret key is wrong.
    """
    config = app.config
    urls = _urls(app, stores or {})
    for url in set(urls.values()):
        # A SQLite file in the instance folder: the app makes that folder, no other.
        make_instance_folder(url, Path(app.instance_path))
        store_from_url(url)
    use_sessions = (
        sessions
        if sessions is not None
        else as_bool(setting(config, "QAPP_SESSIONS"), default=True)
    )
    ttl = None
    if use_sessions:
        ttl = seconds(
            "QAPP_SESSION_TTL",
            session_ttl if session_ttl is not None else setting(config, "QAPP_SESSION_TTL"),
            DEFAULT_SESSION_TTL,
        )
        if ttl is None:
            raise ConfigurationError("QAPP_SESSION_TTL cannot be off while sessions are on")
        if not app.secret_key:
            app.secret_key = setting(config, "QAPP_SECRET_KEY") or load_or_create_secret(
                Path(app.instance_path) / SECRET_FILE
            )
        check_secret(app.secret_key)
        secure = setting(config, "QAPP_SESSION_COOKIE_SECURE")
        if secure is not None:
            config["SESSION_COOKIE_SECURE"] = as_bool(secure)
    return Settings(
        urls=urls,
        session_ttl=ttl,
        anonymous_ttl=seconds(
            "QAPP_ANONYMOUS_SESSION_TTL",
            setting(config, "QAPP_ANONYMOUS_SESSION_TTL"),
            ANONYMOUS_TTL,
        ),
        session_quota=limit(
            "QAPP_SESSION_QUOTA", setting(config, "QAPP_SESSION_QUOTA"), SESSION_QUOTA
        ),
        fresh_login_ttl=fresh_login_ttl(setting(config, "QAPP_FRESH_LOGIN_TTL")),
        login_view=setting(config, "QAPP_LOGIN_VIEW"),
        trusted_proxies=setting(config, "QAPP_TRUSTED_PROXIES"),
        ipv6_prefix=ipv6_prefix(setting(config, "QAPP_IPV6_PREFIX")),
        # Parsed even with the check off: a bad entry is a mistake either way.
        trusted_origins=trusted_origins(setting(config, "QAPP_TRUSTED_ORIGINS")),
        cross_site_check=as_bool(setting(config, "QAPP_CROSS_SITE_CHECK"), default=True),
        fast_path=as_bool(setting(config, "QAPP_FAST_PATH"), default=False),
        metrics=as_bool(setting(config, "QAPP_METRICS")),
        metrics_token=setting(config, "QAPP_METRICS_TOKEN"),
        ratelimit_enabled=as_bool(setting(config, "QAPP_RATELIMIT_ENABLED"), default=True),
        ratelimit_default=limit(
            "QAPP_RATELIMIT_DEFAULT", setting(config, "QAPP_RATELIMIT_DEFAULT"), None
        ),
        ratelimit_on_store_error=on_store_error(setting(config, "QAPP_RATELIMIT_ON_STORE_ERROR")),
    )


def on_store_error(value: object) -> str:
    """``QAPP_RATELIMIT_ON_STORE_ERROR``: "deny" (the default) or "allow".

    Raises:
        ConfigurationError: any other word.
    """
    word = "deny" if value is None else str(value).strip().lower()
    if word not in ON_STORE_ERROR:
        raise ConfigurationError(
            f"QAPP_RATELIMIT_ON_STORE_ERROR: {value!r} is neither 'deny' nor 'allow'"
        )
    return word
