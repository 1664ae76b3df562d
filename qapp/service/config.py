"""Configuration: defaults, then ``QAPP_*`` environment variables, then a mapping.

========================  ===========================================  ==========================
variable                  default                                      meaning
========================  ===========================================  ==========================
QAPP_STORE_URL            ``sqlite://`` file ``qapp.db`` in the        the shared store
                          instance folder
QAPP_SESSION_STORE_URL    QAPP_STORE_URL                               where sessions live
QAPP_CACHE_STORE_URL      QAPP_STORE_URL                               where the cache lives
QAPP_SECRET_KEY           generated once, kept in the instance folder  signs session ids
QAPP_INSTANCE_PATH        ``instance/`` in the working directory       default SQLite file, key
========================  ===========================================  ==========================

Abuse limits, each a ``QAPP_<KEY>`` variable or config key too ("off"
turns a limit off); see :data:`LIMITS` for the defaults:

========================  ==================================================================
key                       what it limits
========================  ==================================================================
LOGIN_LIMIT               failed logins per account and client address
LOGIN_ACCOUNT_LIMIT       failed logins per account, over every client address
LOGIN_CLIENT_LIMIT        logins per client address (every attempt counts)
REGISTER_CLIENT_LIMIT     registrations per client address
HASH_CONCURRENCY          password hashes running at once per worker (503 beyond)
CACHE_MAX_TTL             the longest a cache entry lives; a PUT without ttl gets it
CACHE_QUOTA               cache writes per client address
MEMO_QUOTA                memo requests per client address that compute a new value
SESSION_QUOTA             new sessions per client address (the extension's)
ANONYMOUS_SESSION_TTL     a session's lifetime until its user logs in (the extension's)
TRUSTED_PROXIES           proxies whose X-Forwarded-For names the client (the extension's)
========================  ==================================================================
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qapp.ext.secret import SECRET_FILE, load_or_create_secret
from qapp.state import store_from_url

__all__ = [
    "ENV_KEYS",
    "LIMITS",
    "MAX_BODY",
    "SECRET_FILE",
    "as_bool",
    "limit_setting",
    "load_or_create_secret",
    "resolve",
]

log = logging.getLogger(__name__)

#: Config keys that may come from ``QAPP_<KEY>`` environment variables.
ENV_KEYS = (
    "STORE_URL",
    "SESSION_STORE_URL",
    "CACHE_STORE_URL",
    "SECRET_KEY",
    "INSTANCE_PATH",
    "SESSION_COOKIE_SECURE",
    "LOGIN_LIMIT",
    "LOGIN_ACCOUNT_LIMIT",
    "LOGIN_CLIENT_LIMIT",
    "REGISTER_CLIENT_LIMIT",
    "HASH_CONCURRENCY",
    "CACHE_MAX_TTL",
    "CACHE_QUOTA",
    "MEMO_QUOTA",
    "BODY_TIMEOUT",
    # Seconds that tune the memo and the lab (qapp.service.memo, qapp.service.lab).
    "MEMO_WORK",
    "MEMO_TTL",
    "MEMO_STALE",
    "MEMO_LEASE",
    "MEMO_WAIT",
    "LAB_WORK",
    "LAB_REFRESH_TTL",
    "LAB_REFRESH_STALE",
    "LAB_REFRESH_WORK",
)

#: Defaults of the abuse limits (see the module docstring).
LIMITS: dict[str, Any] = {
    # One address gets 5 guesses per account per quarter hour; an account
    # takes 50 a quarter hour from all addresses together, so it takes 10
    # addresses to lock its owner out (docs/security.md has the trade-off).
    "LOGIN_LIMIT": "5/15 minutes",
    "LOGIN_ACCOUNT_LIMIT": "50/15 minutes",
    "LOGIN_CLIENT_LIMIT": "30/minute",
    "REGISTER_CLIENT_LIMIT": "20/hour",
    "HASH_CONCURRENCY": 2,
    "CACHE_MAX_TTL": 24 * 3600.0,
    "CACHE_QUOTA": "1000/hour",
    "MEMO_QUOTA": "200/hour",
}

#: The extension's own settings, which the service passes on as ``QAPP_<KEY>``.
EXTENSION_KEYS = ("SESSION_QUOTA", "ANONYMOUS_SESSION_TTL", "TRUSTED_PROXIES", "CROSS_SITE_CHECK")

#: Seconds Quart waits for a request body: ample for 64 KiB, short for a trickle.
BODY_TIMEOUT = 10

#: Largest request body accepted, in bytes (larger gets 413).
MAX_BODY = 64 * 1024


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the ``QAPP_*`` settings found in the environment, as plain strings."""
    env = os.environ if environ is None else environ
    return {key: env[f"QAPP_{key}"] for key in ENV_KEYS if env.get(f"QAPP_{key}")}


def instance_path(settings: Mapping[str, Any]) -> Path:
    """The instance folder: the configured one, or ``instance/`` in the working directory."""
    return Path(settings.get("INSTANCE_PATH") or "instance").resolve()


def resolve(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge defaults, environment and ``overrides`` into the app's settings."""
    settings: dict[str, Any] = {**from_env(), **(overrides or {})}
    folder = instance_path(settings)
    settings["INSTANCE_PATH"] = str(folder)
    if not settings.get("STORE_URL"):
        # The folder holds user data (sessions, password hashes): owner only.
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        settings["STORE_URL"] = f"sqlite://{folder / 'qapp.db'}"
    for key in ("SESSION_STORE_URL", "CACHE_STORE_URL"):
        settings[key] = settings.get(key) or settings["STORE_URL"]
    # A bad URL fails here, before anything is written (the key file below).
    for key in ("STORE_URL", "SESSION_STORE_URL", "CACHE_STORE_URL"):
        store_from_url(settings[key])
    if not settings.get("SECRET_KEY"):
        settings["SECRET_KEY"] = load_or_create_secret(folder / SECRET_FILE)
    settings.setdefault("MAX_CONTENT_LENGTH", MAX_BODY)
    # From the environment it is a string; Quart needs a number.
    settings["BODY_TIMEOUT"] = float(settings.get("BODY_TIMEOUT") or BODY_TIMEOUT)
    for key, default in LIMITS.items():
        settings.setdefault(key, default)
    for key in EXTENSION_KEYS:
        if key in settings:
            settings[f"QAPP_{key}"] = settings[key]
    # From the environment it is a string: "0" must not mean True.
    settings["SESSION_COOKIE_SECURE"] = as_bool(settings.get("SESSION_COOKIE_SECURE"))
    return settings


def as_bool(value: object) -> bool:
    """A setting as a bool: "1", "true", "yes" and "on" (any case) are True."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def limit_setting(value: Any) -> str | None:
    """A limit from the settings: None when it is turned off ("off", "", 0 or None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in {"", "off", "0"}):
        return None
    return str(value)
