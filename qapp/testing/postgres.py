"""A throwaway PostgreSQL server of the caller's own, on a free loopback port.

The PostgreSQL store's tests (and anyone trying ``postgresql://`` by hand)
need a server that is theirs alone: never the machine's own cluster on 5432,
never a shared database. :class:`PostgresServer` runs ``initdb`` into a
temporary folder and ``pg_ctl start`` on a free port of 127.0.0.1, creates one
database, and removes everything on exit. :meth:`PostgresServer.kill` crashes
it (SIGKILL, as an outage would) and :meth:`PostgresServer.start` brings it
back on the same port and data, so a client can be seen to recover.

``initdb`` refuses to run as root, so under root every server command runs
as the ``postgres`` system user that Debian's ``postgresql`` package creates.

``pg_ctl`` daemonizes the server: it is nobody's child, and a killed test run
would leave it running. While it may run, a
:class:`~qapp.testing.reaper.Reaper` waits for the process that started it
and, should that process die first, stops it (``pg_ctl stop -m immediate``)
and deletes its folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from qapp.testing.reaper import Reaper
from qapp.testing.reaper import alive as _alive
from qapp.testing.servers import free_port, log_tail

__all__ = ["PostgresServer", "PostgresServerError", "postgres_bindir"]

#: The system user that owns the server's files when we run as root.
SYSTEM_USER = "postgres"
#: The database superuser initdb creates (trust authentication, no password).
SUPERUSER = "postgres"


class PostgresServerError(RuntimeError):
    """The server could not be set up, started or stopped; the message has its log."""


def postgres_bindir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: ``$QAPP_PG_BINDIR``, Debian's, then PATH.

    Debian keeps the server binaries out of PATH, in
    ``/usr/lib/postgresql/<major>/bin``; the newest major version wins.
    """
    explicit = os.environ.get("QAPP_PG_BINDIR")
    candidates = [Path(explicit)] if explicit else []
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=lambda p: _major(p.parent.name), reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise PostgresServerError(
        "no initdb/pg_ctl found: install Debian's PostgreSQL server "
        "(`apt-get install postgresql`), or set QAPP_PG_BINDIR to the folder holding them"
    )


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


class PostgresServer:
    """A PostgreSQL cluster in a temporary folder, serving 127.0.0.1:``port``.

    Use it as a context manager: entering initialises and starts it, leaving
    stops it and deletes its folder. ``url`` names the database ``database``
    (created at first start) as the trust-authenticated superuser.

    By default it trades durability for speed (``fsync=off``): a test needs
    no data to outlive a power cut. ``durable=True`` keeps PostgreSQL's own
    defaults, every commit flushed to disk, for measuring what production costs.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        database: str = "qapp",
        settings: Sequence[str] = (),
        durable: bool = False,
    ) -> None:
        self.port = port or free_port()
        if self.port == 5432:
            raise PostgresServerError("port 5432 belongs to the machine's own PostgreSQL")
        self.database = database
        self.settings = list(settings)
        self.durable = durable
        self.bindir = postgres_bindir()
        self._as_user = self._runas_prefix()
        self.root = Path(tempfile.mkdtemp(prefix="qapp-postgres-"))
        self.datadir = self.root / "data"
        self.sockdir = self.root / "sock"
        self.log_path = self.root / "postgres.log"
        self._own_folder()
        self._initialised = False
        self._created = False
        self._reaper: Reaper | None = None

    # --- who runs the server ------------------------------------------------

    @staticmethod
    def _runas_prefix() -> list[str]:
        """The argv prefix that runs a command as a user initdb accepts."""
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise PostgresServerError(
                f"running as root and no {SYSTEM_USER!r} user exists to run PostgreSQL as: "
                "install Debian's `postgresql` package (it creates that user)"
            ) from None
        return ["runuser", "-u", SYSTEM_USER, "--"]

    def _own_folder(self) -> None:
        # The server writes its data, socket and log here, as the system user.
        self.sockdir.mkdir()
        self.log_path.touch()
        if self._as_user:
            user = pwd.getpwnam(SYSTEM_USER)
            for path in (self.root, self.sockdir, self.log_path):
                os.chown(path, user.pw_uid, user.pw_gid)

    def _run(self, argv: Sequence[str], *, as_server: bool, timeout: float = 60.0) -> str:
        """Run one PostgreSQL command to its end; raise with its output if it fails."""
        prefix = self._as_user if as_server else []
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        # C locale: exists on every machine, and the encoding is still UTF-8.
        env.update(LC_ALL="C", LANG="C")
        try:
            done = subprocess.run(
                [*prefix, *argv],
                capture_output=True,
                text=True,
                env=env,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                # Not in the caller's process group, so a Ctrl-C of the tests
                # does not kill the server behind their back.
                start_new_session=True,
                # runuser needs a folder the system user may enter.
                cwd=self.root,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresServerError(f"{argv[0]} timed out:\n{log_tail(self.log_path)}") from exc
        if done.returncode != 0:
            raise PostgresServerError(
                f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n"
                f"server log:\n{log_tail(self.log_path)}"
            )
        return done.stdout

    # --- lifecycle --------------------------------------------------------------

    @property
    def url(self) -> str:
        """The store URL of the server's database."""
        return self.database_url(self.database)

    def database_url(self, database: str) -> str:
        """The URL of ``database`` on this server, as the superuser."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> Self:
        """Start the server (initialising it the first time) and wait until it accepts."""
        if not self._initialised:
            self._run(
                [
                    str(self.bindir / "initdb"),
                    "-D", str(self.datadir),
                    "-U", SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                as_server=True,
            )  # fmt: skip
            self._initialised = True
        self._clear_stale_locks()
        if self._reaper is None:
            # Before pg_ctl starts it: the server must not outlive us from its first moment.
            self._reaper = Reaper(
                command=[*self._as_user, *self._pg_ctl("immediate", 10), "stop"],
                cwd=self.root,
                pidfile=self._lock_files()[0],
                remove=[self.root],
            )
        options = [
            f"-p {self.port}",
            f"-k {self.sockdir}",
            "-c listen_addresses=127.0.0.1",
            # A test server: losing data to a power cut does not matter, speed does.
            # A crash of the server alone (kill) still loses nothing committed.
            *([] if self.durable else ["-c fsync=off", "-c full_page_writes=off"]),
            # Several worker processes with a pool each, plus the tests' own.
            "-c max_connections=300",
            *(f"-c {setting}" for setting in self.settings),
        ]
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D", str(self.datadir),
                "-l", str(self.log_path),
                "-o", " ".join(options),
                "-t", str(int(timeout)),
                "-w",
                "start",
            ],
            as_server=True,
            timeout=timeout + 10,
        )  # fmt: skip
        if not self._created:
            self.psql(f'CREATE DATABASE "{self.database}"', database="postgres")
            self._created = True
        return self

    def psql(self, sql: str, *, database: str | None = None) -> str:
        """Run ``sql`` with psql as the superuser and return its unaligned output."""
        psql = self.bindir / "psql"
        return self._run(
            [
                str(psql if psql.is_file() else "psql"),
                "-X", "-q", "-A", "-t",
                "-v", "ON_ERROR_STOP=1",
                "-h", "127.0.0.1",
                "-p", str(self.port),
                "-U", SUPERUSER,
                "-d", database or self.database,
                "-c", sql,
            ],
            as_server=False,
        )  # fmt: skip

    def empty_store(self) -> None:
        """Empty the PostgreSQL store's tables in the database, if a store has made them.

        Between tests, this is much faster than a database of their own each.
        """
        from qapp.store.backends.postgres import TABLES

        tables = ", ".join(TABLES)
        self.psql(
            f"DO $$ BEGIN IF to_regclass('{TABLES[0]}') IS NOT NULL "
            f"THEN TRUNCATE {tables}; END IF; END $$"
        )

    def _lock_files(self) -> list[Path]:
        """The postmaster's lock files: one in the data folder, one beside its socket."""
        return [self.datadir / "postmaster.pid", self.sockdir / f".s.PGSQL.{self.port}.lock"]

    def _postmaster_pid(self) -> int | None:
        return _pid_in(self._lock_files()[0])

    def _clear_stale_locks(self) -> None:
        # After a kill, the postmaster is not our child and may linger as a
        # zombie that nobody reaps; PostgreSQL then sees its pid "alive" in
        # the lock files and refuses to start. A lock of a dead pid is stale.
        for path in self._lock_files():
            pid = _pid_in(path)
            if pid is not None and not _alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _pg_ctl(self, mode: str, timeout: float) -> list[str]:
        """``pg_ctl`` on this server's data, waiting ``timeout`` s, stopping in ``mode``."""
        return [
            str(self.bindir / "pg_ctl"),
            "-D", str(self.datadir),
            "-m", mode,
            "-t", str(int(timeout)),
            "-w",
        ]  # fmt: skip

    def _release_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper.release()
            self._reaper = None

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the postmaster and its backends at once: a crash, not a shutdown."""
        pid = self._postmaster_pid()
        if pid is None:
            self._release_reaper()
            return
        # Children first in the list, found before their parent dies (then
        # they would be re-parented and harder to find).
        victims = [*_children(pid), pid]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for child in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_alive(victim) for victim in victims):
            if time.monotonic() > deadline:
                raise PostgresServerError(f"postgres (pid {pid}) survived SIGKILL")
            time.sleep(0.02)
        self._release_reaper()

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down cleanly (fast mode), if it runs; kill it if that fails."""
        pid = self._postmaster_pid()
        if pid is None or not _alive(pid):
            self._release_reaper()
            return
        try:
            self._run(
                [*self._pg_ctl("fast", timeout), "stop"], as_server=True, timeout=timeout + 10
            )
        except PostgresServerError:
            self.kill()
        self._release_reaper()

    def cleanup(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def _pid_in(lock_file: Path) -> int | None:
    """The pid on the first line of a PostgreSQL lock file, or None."""
    try:
        first = lock_file.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def _children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (PostgreSQL's backends and helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found
