"""``qapp serve --server granian``: the same app and guarantees on granian's Rust HTTP server.

hypercorn parses HTTP in Python, in the same process and loop that runs
the app, so on a busy worker a third or more of each request's CPU goes to
the server rather than to the app. granian parses HTTP, keeps connections
and writes answers in Rust, and hands the app its ASGI scope; the app, its
hooks and its stores are unchanged.

What ``qapp serve`` promises holds here too, by granian's own means where
it has them:

- a worker that dies is replaced while the others serve
  (``respawn_failed_workers``); a worker that dies again within 5.5 s of
  being replaced is a crash loop, and the server stops with status 1;
- each worker listens on a socket of its own with ``SO_REUSEPORT`` (granian
  builds one per worker on Linux), so the kernel spreads connections;
- a port that anything already listens on is refused, by the probe of
  :func:`qapp.server.listeners.refuse_busy`, which ``qapp serve`` runs
  before anything starts (a ``SO_REUSEPORT`` socket would bind silently);
- SIGTERM or SIGINT to the parent stops each worker gracefully: the app's
  lifespan shutdown (``after_serving``) runs in each;
- HTTP/1.1 only on cleartext unless ``--h2c``;
- the same request framing: a request with both ``Content-Length`` and
  ``Transfer-Encoding`` gets a 400 and a closed connection, and a head over
  ``h11_max_incomplete_size`` a 431 (:mod:`qapp.server.framing`);
- each worker tunes its garbage collector (:mod:`qapp.server.worker`).

Settings come from the same hypercorn TOML file, so one file describes a
deployment whichever server runs it: ``bind`` (one TCP address),
``workers``, ``backlog``, ``keep_alive_timeout`` (granian's HTTP/1 header
read timeout, which also closes idle keep-alive connections),
``h11_max_incomplete_size`` (granian's HTTP/1 read buffer) and
``graceful_timeout`` (how long a stopping worker may take before it is
killed). TLS, ``unix:`` and several binds are hypercorn's alone: a
configuration that asks granian for them is refused in one line.
"""

from __future__ import annotations

import importlib
import math
import multiprocessing
import os
from typing import Any

from hypercorn.config import Config

from qapp.server.framing import guard
from qapp.server.worker import tune_gc
from qapp.store.extras import require

__all__ = ["GranianConfigError", "load_app", "loop_name", "serve", "settings"]

#: The smallest HTTP/1 read buffer granian accepts, in bytes.
MIN_BUFFER = 8192


def loop_name() -> str:
    """The event loop each granian worker runs the app in: uvloop if installed, else asyncio.

    ``qapp[fast]`` installs uvloop (except on Windows). On granian it took
    16 % less CPU per request than asyncio's loop on the atomic counter at
    64 connections, and the same at 1,000: granian's Rust threads wake the
    loop for every request, which uvloop does cheaply. What keeps hypercorn
    on asyncio (uvloop accepts one connection per turn of a busy loop) does
    not apply: granian accepts in Rust.
    """
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


class GranianConfigError(ValueError):
    """The configuration asks granian for something only hypercorn does."""


def _bind(config: Config) -> tuple[str, int]:
    """The one TCP ``host, port`` that granian can listen on."""
    if config.ssl_enabled:
        raise GranianConfigError("TLS is served by hypercorn only; drop --server granian")
    if len(config.bind) != 1:
        raise GranianConfigError(f"granian listens on one address, not {config.bind}")
    bind = config.bind[0]
    if bind.startswith(("unix:", "fd://")):
        raise GranianConfigError(f"granian here listens on host:port, not {bind!r}")
    host, _, port = bind.rpartition(":")
    if not port.isdigit():
        raise GranianConfigError(f"bind {bind!r} has no port")
    return host.strip("[]") or "0.0.0.0", int(port)


def settings(config: Config, *, h2c: bool = False) -> dict[str, Any]:
    """granian's ``Server`` arguments for ``config``.

    Raises:
        GranianConfigError: ``config`` asks for what only hypercorn does.
        MissingExtra: granian is not installed (``qapp[fast]``).
    """
    require("fast", "--server granian")
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    host, port = _bind(config)
    return {
        "target": config.application_path,
        "address": host,
        "port": port,
        # ASGI with lifespan: before_serving and after_serving run in each worker.
        "interface": Interfaces.ASGI,
        "workers": config.workers,
        "loop": Loops(loop_name()),
        "http": HTTPModes.auto if h2c else HTTPModes.http1,
        "http1_settings": HTTP1Settings(
            header_read_timeout=max(1, round(config.keep_alive_timeout * 1000)),
            # hyper refuses (431) a head that does not fit its read buffer: the
            # same limit as hypercorn's (qapp.server.framing).
            max_buffer_size=max(MIN_BUFFER, config.h11_max_incomplete_size),
        ),
        "backlog": config.backlog,
        "respawn_failed_workers": True,
        "workers_kill_timeout": max(1, math.ceil(config.graceful_timeout)),
        "log_access": False,
    }


def load_app(target: str) -> Any:
    """Import ``module:name`` in a worker, tune its collector, and hand granian the app.

    granian calls this in each worker process (it is pickled by name to
    spawned workers). Importing before the freeze means the app and its
    modules are never walked by a collection again.
    """
    from granian.log import logger

    module_name, _, attribute = target.partition(":")
    app = getattr(importlib.import_module(module_name), attribute or "app")
    tune_gc()
    # The head's size and its number of fields are granian's to refuse, while
    # it reads (settings()).
    app = guard(app, max_head=None, max_headers=None)
    # granian's own logger: the one a spawned worker has a handler for.
    logger.info("Running on granian in worker %d", os.getpid())
    return app


def serve(config: Config, *, h2c: bool = False) -> int:
    """Serve ``config.application_path`` on granian; return the exit status.

    0 after a requested stop, 1 after a crash loop (or a worker that failed
    to start).
    """
    from granian.server import Server

    arguments = settings(config, h2c=h2c)
    # Spawned, not forked, as under hypercorn: a worker starts clean rather
    # than from a copy of a parent that already runs granian's threads.
    multiprocessing.set_start_method("spawn", force=True)
    server = Server(**arguments)
    try:
        server.serve(target_loader=load_app)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0
