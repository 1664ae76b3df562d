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

__all__ = ["SECRET_FILE", "load_or_create_secret"]

log = logging.getLogger(__name__)

#: The file, in the instance folder, that holds a generated key.
SECRET_FILE = "secret_key"


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
