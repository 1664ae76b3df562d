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
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qapp.ext.secret import SECRET_FILE, load_or_create_secret

__all__ = ["ENV_KEYS", "MAX_BODY", "SECRET_FILE", "as_bool", "load_or_create_secret", "resolve"]

log = logging.getLogger(__name__)

#: Config keys that may come from ``QAPP_<KEY>`` environment variables.
ENV_KEYS = (
    "STORE_URL",
    "SESSION_STORE_URL",
    "CACHE_STORE_URL",
    "SECRET_KEY",
    "INSTANCE_PATH",
    "SESSION_COOKIE_SECURE",
)

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
    if not settings.get("SECRET_KEY"):
        settings["SECRET_KEY"] = load_or_create_secret(folder / SECRET_FILE)
    settings.setdefault("MAX_CONTENT_LENGTH", MAX_BODY)
    # From the environment it is a string: "0" must not mean True.
    settings["SESSION_COOKIE_SECURE"] = as_bool(settings.get("SESSION_COOKIE_SECURE"))
    return settings


def as_bool(value: object) -> bool:
    """A setting as a bool: "1", "true", "yes" and "on" (any case) are True."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)
