"""Run the peers like qapp's servers, on free loopback ports: Flask, FastAPI, bare ASGI
on granian and on hypercorn."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from qapp.server.granian import loop_name
from qapp.testing import HypercornServer

#: The directory that holds the ``bench`` package, so each server can import its peer.
ROOT = Path(__file__).resolve().parents[2]


class PeerServer(HypercornServer):
    """A peer app on Redis under its own server, with :class:`~qapp.testing.HypercornServer`'s
    process handling: readiness (``/health`` from every worker), stopping by SIGTERM to the
    parent alone, and the log kept for error messages. Only the command differs."""

    def __init__(
        self,
        *,
        app: str,
        redis_url: str,
        workers: int = 2,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(workers=workers, env=env, port=port, app=app)
        self.env.update(PEER_REDIS_URL=redis_url)

    def argv(self) -> list[str]:
        """The server's command line."""
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> Self:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._spawn(self.argv(), env, ROOT)
        self._wait_ready(self.healthy, timeout)
        self._wait_ready(self.all_workers_up, timeout)
        return self


class GunicornServer(PeerServer):
    """The Flask peer under gunicorn's gthread workers, ``threads`` per worker."""

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
        super().__init__(
            app="bench.peers.flask_app:app",
            redis_url=redis_url,
            workers=workers,
            env=env,
            port=port,
        )
        self.threads = threads
        self.env.update(PEER_THREADS=str(threads))

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn",
            "--chdir", str(ROOT),
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers),
            "--worker-class", "gthread",
            "--threads", str(self.threads),
            "--error-logfile", "-",
            self.app,
        ]  # fmt: skip


class UvicornServer(PeerServer):
    """The FastAPI peer under uvicorn's own workers (uvloop and httptools), as it ships."""

    name = "uvicorn"

    def __init__(self, *, redis_url: str, workers: int = 2, port: int | None = None) -> None:
        super().__init__(
            app="bench.peers.fastapi_app:app", redis_url=redis_url, workers=workers, port=port
        )

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", str(self.workers),
            # The same queue of pending connections as qapp's hypercorn.toml.
            "--backlog", "2048",
            "--no-access-log",
            "--log-level", "warning",
            self.app,
        ]  # fmt: skip


class CeilingServer(PeerServer):
    """The bare ASGI function under granian, with the fast path's settings."""

    name = "granian"

    def __init__(self, *, redis_url: str, workers: int = 2, port: int | None = None) -> None:
        super().__init__(
            app="bench.peers.asgi_ceiling:app", redis_url=redis_url, workers=workers, port=port
        )

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "granian",
            "--interface", "asgi",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", str(self.workers),
            "--loop", loop_name(),
            "--http", "1",
            "--backlog", "2048",
            self.app,
        ]  # fmt: skip


class HypercornCeilingServer(PeerServer):
    """The bare ASGI function under ``qapp serve``: hypercorn with qapp's serving defaults.

    The same command and defaults as qapp on hypercorn (asyncio workers, a
    listening socket per worker, the repository's hypercorn.toml values),
    with the bare function in place of qapp's service.
    """

    name = "hypercorn"

    def __init__(self, *, redis_url: str, workers: int = 2, port: int | None = None) -> None:
        super().__init__(
            app="bench.peers.asgi_ceiling:app", redis_url=redis_url, workers=workers, port=port
        )

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "qapp.tools.cli", "serve",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers),
            "--app", self.app,
            "--server", "hypercorn",
        ]  # fmt: skip
