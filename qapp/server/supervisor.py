"""Run hypercorn's workers and replace any that dies: what ``qapp serve`` runs.

hypercorn's own parent (0.18) treats a worker that exits abnormally as
fatal: it stops every other worker and exits, so one crashed worker (an OOM
kill, a segfault in a C extension) takes the whole server down. For qapp
that is needless: a worker holds no state of its own that matters (the
store has it all), so the right response to a crash is a fresh worker
beside the ones still serving.

This module is hypercorn's multi-worker loop with three changes. It uses
hypercorn's own pieces (config, sockets, worker functions), but

- a worker that exits is replaced, not mourned;
- the parent binds one listening socket per worker with ``SO_REUSEPORT``
  (:mod:`qapp.server.listeners`), so the kernel spreads new connections evenly over
  the workers; a replacement serves on the socket of the worker it replaces;
- each worker tunes its garbage collector for serving (:mod:`qapp.server.worker`).

SIGTERM or SIGINT to the parent shuts the workers down gracefully
(``after_serving`` runs in each). A worker that keeps dying is not
restarted for ever: past :data:`MAX_RESTARTS` in :data:`RESTART_WINDOW`
seconds the supervisor stops and exits with status 1, so that the service
manager above it sees the failure.

``hypercorn -c hypercorn.toml qapp.asgi:app`` still works; it just does not
survive a worker crash, and its workers share one listening socket.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from multiprocessing import get_context
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from hypercorn.config import Config
from hypercorn.typing import WorkerFunc

from qapp.server.listeners import close_all, worker_sockets
from qapp.server.worker import run as run_worker

log = logging.getLogger("qapp.supervisor")

#: Replacements allowed per worker within :data:`RESTART_WINDOW` before giving up.
MAX_RESTARTS = 5
#: Seconds over which restarts are counted.
RESTART_WINDOW = 30.0


def _worker_func(config: Config) -> WorkerFunc:
    if config.worker_class == "uvloop":
        from hypercorn.asyncio.run import uvloop_worker

        return uvloop_worker
    if config.worker_class == "asyncio":
        from hypercorn.asyncio.run import asyncio_worker

        return asyncio_worker
    if config.worker_class == "trio":
        from hypercorn.trio.run import trio_worker

        return trio_worker
    raise ValueError(f"no worker class {config.worker_class!r}")


def serve(config: Config) -> int:
    """Serve ``config.application_path`` with ``config.workers`` supervised workers.

    Returns the exit status: 0 after a requested shutdown, 1 after a crash loop.
    """
    if config.workers < 1:
        raise ValueError("the supervisor needs at least one worker")
    worker_func = _worker_func(config)
    slots = worker_sockets(config)
    ctx = get_context("spawn")
    shutdown_event = ctx.Event()
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True
        shutdown_event.set()

    def start_worker(slot: int) -> BaseProcess:
        process = ctx.Process(
            target=run_worker,
            args=(worker_func, config, slots[slot], shutdown_event),
        )
        process.daemon = config.daemon
        # Every worker, first or replacement, starts with SIGINT ignored, so
        # a Ctrl-C reaches the parent only, which then shuts them down in
        # order (as hypercorn does). A Python handler would not carry over.
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        finally:
            signal.signal(signal.SIGINT, handler)
        return process

    # Before the first worker: a SIGTERM while they start must not orphan them.
    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), stop)
    # Worker slot -> its process; a replacement takes the dead worker's slot.
    workers = {slot: start_worker(slot) for slot in range(config.workers)}

    restarts: deque[float] = deque()
    status = 0
    while not stopping:
        # Wakes when a worker exits; the timeout notices a signal soon.
        wait([w.sentinel for w in workers.values()], timeout=0.5)
        for slot, worker in [(n, w) for n, w in workers.items() if w.exitcode is not None]:
            del workers[slot]
            worker.join()
            if stopping:
                continue
            now = time.monotonic()
            restarts.append(now)
            while restarts and restarts[0] < now - RESTART_WINDOW:
                restarts.popleft()
            if len(restarts) > MAX_RESTARTS * config.workers:
                log.error(
                    "workers keep dying (%d restarts in %gs); stopping",
                    len(restarts),
                    RESTART_WINDOW,
                )
                status = 1
                stop()
                break
            log.warning(
                "worker %s exited with status %s; starting a replacement",
                worker.pid,
                worker.exitcode,
            )
            workers[slot] = start_worker(slot)

    deadline = time.monotonic() + config.graceful_timeout + 5
    for worker in workers.values():
        worker.join(max(0.0, deadline - time.monotonic()))
    for worker in workers.values():
        if worker.is_alive():
            worker.terminate()
            worker.join()
    close_all(slots)
    return status
