"""One worker process of ``qapp serve``: hypercorn's worker, with the garbage collector tuned.

CPython frees most objects by reference counting; its cyclic collector
only exists for reference cycles, and a request does leave some (asyncio
tasks and futures, exceptions and their tracebacks): a worker with
automatic collection off had 73,000 unreachable objects after 3 s at about
2,300 requests a second. So the collector must run, but its defaults
(thresholds 700, 10, 10) are tuned for small scripts, not for a server
holding hundreds of connections:

- A collection of the young generation runs every 700 allocations, many
  times per request, and every object still in use by a request in flight
  survives it and is promoted. At 1,000 connections a request is in flight
  for a few hundred milliseconds, so nearly everything a request makes is
  promoted, and then dies in the oldest generation.
- The oldest generation is collected once enough has been promoted, and
  each such collection walks every tracked object in the process: the
  modules, the app, every connection.

Under a thousand connections the defaults spent about a third of each
worker's CPU in the collector, most of it in full collections
(docs/deployment.md has the figures). So:

- :func:`gc.freeze` once the app is imported: everything that exists by
  then (modules, the app, its routes) moves to a permanent generation that
  no collection walks again.
- A young-generation threshold of 5,000 allocations, and middle and old
  thresholds of 20 and 100: a young collection then comes every few
  requests and is short, and the collections that walk the older
  generations come twenty and two thousand times less often than it.
  A much higher young threshold also saves the CPU, but each young
  collection then walks tens of thousands of objects still in use by the
  requests in flight, a pause long enough to set the p99 (docs/deployment.md
  has the figures).

This is a policy of the serving process, so it lives here and not in
:func:`qapp.create_app`: an app imported into another program leaves that
program's collector alone.
"""

from __future__ import annotations

import gc
import importlib
import os
from multiprocessing.synchronize import Event

from hypercorn.config import Config, Sockets
from hypercorn.typing import WorkerFunc

from qapp.server.framing import guarded_path

#: Set (to anything) by ``qapp serve --h2c``: leave cleartext HTTP/2 on.
H2C_VARIABLE = "QAPP_H2C"

#: ``gc.set_threshold`` arguments for a worker: young, middle, old.
GC_THRESHOLDS = (5_000, 20, 100)


def tune_gc() -> None:
    """Set the worker's collector thresholds and freeze everything allocated so far."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def http1_only() -> None:
    """Serve HTTP/1.1 only on plain TCP: no h2c upgrade, no prior-knowledge HTTP/2.

    hypercorn switches a cleartext connection to HTTP/2 when the client asks
    (``Upgrade: h2c``, or the HTTP/2 preface), and has no setting to refuse.
    HTTP/2's streams let one connection start hundreds of requests at once:
    a burst of opened-and-reset streams ran computations for clients that
    had already gone, then died with a traceback. Behind a TLS proxy (the
    way to serve HTTP/2 to browsers) cleartext HTTP/2 buys nothing, so the
    check that switches is replaced by one that never does: an h2c upgrade
    is answered in HTTP/1.1, as RFC 9110 allows, and the preface is a bad
    request. ``qapp serve --h2c`` keeps hypercorn's behaviour.
    """
    from hypercorn.protocol.h11 import H11Protocol

    async def check_protocol(self: H11Protocol, event: object) -> None:
        return None

    H11Protocol._check_protocol = check_protocol  # type: ignore[method-assign]


def run(
    worker_func: WorkerFunc,
    config: Config,
    sockets: Sockets,
    shutdown_event: Event,
) -> None:
    """The target of one worker process: import the app, tune the collector, serve.

    The app is served behind :class:`qapp.server.framing.FramingGuard`.
    """
    # hypercorn's worker imports the app itself; importing it first means the
    # freeze covers it, and the worker then finds it in sys.modules.
    module, _, _ = config.application_path.partition(":")
    importlib.import_module(module)
    if not os.environ.get(H2C_VARIABLE):
        http1_only()
    config.application_path = guarded_path(config.application_path, config.h11_max_incomplete_size)
    tune_gc()
    worker_func(config, sockets, shutdown_event)
