"""The key that signs session ids: configured, or made once and kept in the instance folder.

Every worker process of a server must sign with the same key, or a cookie
signed by one worker would be refused by the next. A key that nobody
configured is therefore not generated per process: the first worker writes
one to the instance folder, owner-only, and every worker reads that file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

from qapp.state import ConfigurationError

__all__ = ["MIN_SECRET_BYTES", "SECRET_FILE", "check_secret", "load_or_create_secret"]

log = logging.getLogger(__name__)

#: The file, in the instance folder, that holds a generated key.
SECRET_FILE = "secret_key"
#: The shortest key accepted: anything shorter can be guessed offline from one cookie.
MIN_SECRET_BYTES = 32


def check_secret(key: str | bytes) -> None:
    """Refuse a signing key shorter than :data:`MIN_SECRET_BYTES`."""
    raw = key.encode() if isinstance(key, str) else key
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"the secret key is {len(raw)} bytes; use at least {MIN_SECRET_BYTES} "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ConfigurationError(
            f"the key file {path} can be read by other users (mode {mode & 0o777:o}); "
            f"chmod 600 {path}"
        )


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
            _check_private(path)
            return key
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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
