"""What ``qapp serve`` runs with unless told otherwise: the serving defaults, in the package.

Both servers read them (hypercorn directly, granian through
:func:`qapp.server.granian.settings`), so an installed qapp serves the same
way from any folder, with no file to find. A config file is read only when
``--config FILE`` names one; its settings go over these, and the command
line's (``--bind``, ``--workers``, ``--keep-alive``) over both.

Why each value:

- ``bind``: loopback only; put a reverse proxy in front for anything public.
- ``workers``: several processes; state that must be shared lives in the
  store, never in a module global.
- ``worker_class``: asyncio, not uvloop: uvloop's libuv accepts one
  connection per turn of a busy loop, so a burst of 1,000 new connections
  waited up to 5 s in the kernel's queue (p99 4 s against 0.5 s with
  asyncio, same throughput). asyncio accepts a burst at once, which is why
  each worker gets a listening socket of its own (:mod:`qapp.server.listeners`).
- ``backlog``: hypercorn's default, 100, overflows when hundreds of clients
  connect at once (with 1,000 simultaneous connects, 617 handshakes were
  dropped at 100 and none at 2048); the kernel caps it at
  ``net.core.somaxconn``.
- ``graceful_timeout``: seconds a stopping worker may spend finishing
  requests in flight.
- ``keep_alive_timeout``: seconds an idle keep-alive connection is held.
- ``include_server_header``: no ``server: hypercorn``, which tells a
  scanner what to try.
- ``errorlog``: errors to stderr; the access log stays off (at thousands of
  requests a second it costs more than the request).

The repository's ``hypercorn.toml`` says the same, as a deployment config to
copy (``qapp serve --config hypercorn.toml``, or plain ``hypercorn -c``).
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hypercorn.config import Config

from qapp.state import ConfigurationError

__all__ = ["SETTINGS", "load", "toml_text"]

#: hypercorn ``Config`` attributes and their values when nothing says otherwise.
SETTINGS: Mapping[str, Any] = MappingProxyType(
    {
        "bind": ["127.0.0.1:8000"],
        "workers": 4,
        "worker_class": "asyncio",
        "backlog": 2048,
        "graceful_timeout": 10,
        "keep_alive_timeout": 5,
        "include_server_header": False,
        "errorlog": "-",
    }
)


def load(path: Path | None = None) -> Config:
    """A hypercorn ``Config``: :data:`SETTINGS`, then the TOML file at ``path`` if one is named.

    Raises:
        ConfigurationError: ``path`` is named but cannot be read, or is not TOML.
    """
    settings = copy.deepcopy(dict(SETTINGS))
    if path is not None:
        try:
            with path.open("rb") as file:
                settings.update(tomllib.load(file))
        except FileNotFoundError:
            raise ConfigurationError(f"no config file {str(path)!r}") from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read {str(path)!r}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{str(path)!r} is not TOML: {exc}") from None
    return Config.from_mapping(settings)


def toml_text(settings: Mapping[str, Any] = SETTINGS) -> str:
    """``settings`` as a hypercorn TOML file, for a server that reads only files (plain hypercorn).

    The values are strings, numbers, booleans and lists of strings, which
    TOML writes as JSON does.
    """
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
