"""Run the Flask peer under gunicorn, on a free loopback port, like qapp's servers."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from qapp.testing import HypercornServer

#: The directory that holds the ``bench`` package, so gunicorn can import the peer.
ROOT = Path(__file__).resolve().parents[2]


class GunicornServer(HypercornServer):
    """The Flask peer under gunicorn's gthread workers.

    It reuses :class:`~qapp.testing.HypercornServer`'s process handling:
    readiness (``/health`` from every worker), stopping by SIGTERM to the
    parent alone, and the log kept for error messages. Only the command differs.
    """

    name = "gunicorn"

    def __init__(
        self,
        *,
        redis_url: str,
        workers: int = 2,
        threads: int = 8,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(workers=workers, env=env, port=port, app="bench.peers.flask_app:app")
        self.threads = threads
        self.env.update(PEER_REDIS_URL=redis_url, PEER_THREADS=str(threads))

    def start(self, timeout: float = 30.0) -> Self:
        argv = [
            sys.executable, "-m", "gunicorn",
            "--chdir", str(ROOT),
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers),
            "--worker-class", "gthread",
            "--threads", str(self.threads),
            "--error-logfile", "-",
            self.app,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._spawn(argv, env)
        self._wait_ready(self.healthy, timeout)
        self._wait_ready(self.all_workers_up, timeout)
        return self
