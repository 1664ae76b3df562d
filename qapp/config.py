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

import contextlib
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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

SECRET_FILE = "secret_key"


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
        folder.mkdir(parents=True, exist_ok=True)
        settings["STORE_URL"] = f"sqlite://{folder / 'qapp.db'}"
    for key in ("SESSION_STORE_URL", "CACHE_STORE_URL"):
        settings[key] = settings.get(key) or settings["STORE_URL"]
    if not settings.get("SECRET_KEY"):
        settings["SECRET_KEY"] = load_or_create_secret(folder / SECRET_FILE)
    settings.setdefault("MAX_CONTENT_LENGTH", MAX_BODY)
    return settings


def load_or_create_secret(path: Path) -> str:
    """Return the key kept at ``path``, creating it first if there is none.

    Several workers start at once and must agree on one key, or a cookie
    signed by one would be refused by another. Each writes a complete
    candidate to a private temporary file and hard-links it into place:
    ``link`` fails if the name exists, so exactly one candidate wins and
    nobody ever reads a half-written key. The file is owner-only.
    """
    with contextlib.suppress(FileNotFoundError):
        key = path.read_text(encoding="ascii").strip()
        if key:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}")
    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(candidate, path)
            log.info("generated a new secret key in %s", path)
    finally:
        os.unlink(candidate)
    return path.read_text(encoding="ascii").strip()
