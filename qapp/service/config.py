"""The demo service's settings: the extension's ``QAPP_*`` keys, plus the service's own.

One rule for all of them, :func:`qapp.ext.settings.setting`'s: a key is read
from the app's config (here, the mapping given to ``create_app``), else from
the environment variable of the same name. The extension reads its keys
(store URLs, sessions, the secret key, proxies, …) itself when ``Qapp(app)``
is installed; this module fills in the service's own keys below, once, so
the routes read ``app.config`` and never the environment.

``create_app`` also takes each key without its ``QAPP_`` prefix
(``{"STORE_URL": …}``): the service's older names, kept as aliases. Quart's
own keys (``SECRET_KEY``, ``MAX_CONTENT_LENGTH``, ``SESSION_COOKIE_SECURE``,
…) pass through as Quart defines them.

Abuse limits take "off" for no limit. docs/settings.md lists every key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quart import Quart, current_app

from qapp.ext.settings import EXTENSION_SETTINGS, limit, setting
from qapp.state import ConfigurationError

__all__ = ["ALIASES", "MAX_BODY", "SERVICE_SETTINGS", "instance_path", "number", "resolve"]

#: The service's own keys: key -> (default, what it means).
SERVICE_SETTINGS: dict[str, tuple[Any, str]] = {
    "QAPP_INSTANCE_PATH": ("instance", "the instance folder: default SQLite file, generated key"),
    # One address gets 5 guesses per account per quarter hour; an account
    # takes 50 a quarter hour from all addresses together, so it takes 10
    # addresses to lock its owner out (docs/security.md has the trade-off).
    "QAPP_LOGIN_LIMIT": ("5/15 minutes", "failed logins per account and client address"),
    "QAPP_LOGIN_ACCOUNT_LIMIT": ("50/15 minutes", "failed logins per account, all clients"),
    "QAPP_LOGIN_CLIENT_LIMIT": ("30/minute", "logins per client address (every attempt)"),
    "QAPP_REGISTER_CLIENT_LIMIT": ("20/hour", "registrations per client address"),
    "QAPP_HASH_CONCURRENCY": (2, "password hashes at once per worker (503 beyond)"),
    "QAPP_CACHE_MAX_TTL": (24 * 3600.0, "the longest a cache entry lives (s)"),
    "QAPP_CACHE_QUOTA": ("1000/hour", "cache writes per client address"),
    "QAPP_MEMO_QUOTA": ("200/hour", "new memo and lab keys computed per client address"),
    "QAPP_BODY_TIMEOUT": (10.0, "seconds Quart waits for a request body"),
    "QAPP_MEMO_WORK": (0.2, "seconds of the memo's simulated work"),
    "QAPP_MEMO_TTL": (300.0, "seconds a memo value is fresh"),
    "QAPP_MEMO_STALE": (0.0, "seconds a memo value is served stale after that"),
    "QAPP_MEMO_LEASE": (5.0, "seconds of the memo computer's renewed lease"),
    "QAPP_MEMO_WAIT": (8.0, "seconds a memo waiter waits before a 503"),
    "QAPP_LAB_WORK": (0.5, "seconds of the stampede rows' simulated work"),
    "QAPP_LAB_TTL": (300.0, "seconds the stampede rows keep a value and its count"),
    "QAPP_LAB_REFRESH_TTL": (2.0, "seconds the refresh row's value is fresh"),
    "QAPP_LAB_REFRESH_STALE": (30.0, "seconds it is served stale after that"),
    "QAPP_LAB_REFRESH_WORK": (0.25, "seconds of the refresh row's work"),
}

#: Keys whose value is a rate limit ("5/minute" or "off").
LIMIT_KEYS = frozenset(
    key
    for key, (default, _) in SERVICE_SETTINGS.items()
    if isinstance(default, str) and "/" in default
)

#: Keys whose value is a number (seconds, or a count).
NUMBER_KEYS = frozenset(
    key for key, (default, _) in SERVICE_SETTINGS.items() if isinstance(default, int | float)
)

#: The service's older names, without the prefix, for the keys above and the extension's.
ALIASES: dict[str, str] = {
    key.removeprefix("QAPP_"): key
    for key in (*SERVICE_SETTINGS, *EXTENSION_SETTINGS)
    # Quart's own key of the same name wins; QAPP_SECRET_KEY stays the extension's.
    if key not in ("QAPP_SECRET_KEY", "QAPP_SESSION_COOKIE_SECURE")
}

#: Largest request body accepted, in bytes (larger gets 413).
MAX_BODY = 64 * 1024


def instance_path(config: Mapping[str, Any]) -> Path:
    """The instance folder: ``QAPP_INSTANCE_PATH``, or ``instance/`` in the working directory."""
    return Path(setting(config, "QAPP_INSTANCE_PATH") or "instance").resolve()


def resolve(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The app's config: ``overrides`` (aliases renamed), then each service key read once.

    Raises:
        ConfigurationError: a limit or a number of seconds cannot be read.
    """
    config = {ALIASES.get(key, key): value for key, value in (overrides or {}).items()}
    for key, (default, _) in SERVICE_SETTINGS.items():
        value = setting(config, key)
        if key in LIMIT_KEYS:
            config[key] = limit(key, value, default)
        elif key in NUMBER_KEYS:
            config[key] = _number(key, default if value is None else value)
        else:
            config[key] = default if value is None else value
    config["QAPP_INSTANCE_PATH"] = str(instance_path(config))
    # The demo serves with the fast path unless told not to (the extension's default is off).
    if setting(config, "QAPP_FAST_PATH") is None:
        config["QAPP_FAST_PATH"] = True
    # Quart's own keys.
    config.setdefault("MAX_CONTENT_LENGTH", MAX_BODY)
    config["BODY_TIMEOUT"] = config["QAPP_BODY_TIMEOUT"]
    return config


def _number(key: str, value: object) -> float:
    """A finite number >= 0 (at least 1 for a count of slots)."""
    try:
        found = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        found = math.nan
    least = 1.0 if key == "QAPP_HASH_CONCURRENCY" else 0.0
    if not math.isfinite(found) or found < least:
        raise ConfigurationError(f"{key}: not a number >= {least:g}: {value!r}")
    return found


def number(key: str, app: Quart | None = None) -> float:
    """The service setting ``key`` (e.g. ``"QAPP_MEMO_TTL"``) of ``app`` or the current app."""
    return float((app or current_app).config[key])
