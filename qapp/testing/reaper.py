"""A watchdog that stops a test server once the process that started it is gone.

A test run that is killed (SIGKILL of pytest, an OOM kill, a closed
terminal) runs no ``finally`` and no fixture teardown, so every server it
started would stay: redis-server and ``qapp serve`` keep running as orphans,
and PostgreSQL, which ``pg_ctl`` daemonizes, was never its child at all.
Each server therefore gets a :class:`Reaper`: a small process, started beside
it, that waits for its owner and, if the owner disappears without releasing
it, stops the server and removes its folders.

How the reaper knows: its stdin is a pipe whose only writer is the owner.
The kernel closes that pipe when the owner dies, however it dies; a
normal stop writes ``release`` first. As a second witness (a forked child of
the owner may hold the pipe open) the reaper also notices that its parent
changed. It runs in a session of its own, so a Ctrl-C of the tests reaches
the tests (whose teardown stops the server) and not the reaper.

The watching half runs as a plain script (``python -I -S reaper.py SPEC``)
with the standard library alone: it starts in milliseconds and imports
nothing of qapp's.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Reaper", "alive"]

#: Seconds a server may take to stop on SIGTERM before its process group is killed.
GRACE = 5.0
#: Seconds between two looks at the owner when the pipe says nothing.
POLL = 0.5


def alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie (dead, not yet reaped) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


def _group_alive(pgid: int) -> bool:
    """True while any live process is in process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _ppid, group = (entry / "stat").read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state not in {"Z", "X"}:
            return True
    return False


def _pid_in(path: str) -> int | None:
    """The pid on the first line of a pid file (PostgreSQL's ``postmaster.pid``), or None."""
    try:
        first = Path(path).read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


class Reaper:
    """The owner's handle on one watchdog; :meth:`release` it when the server is stopped.

    What the watchdog does if the owner goes first, in this order:

    - ``command``: runs it (e.g. ``pg_ctl stop -m immediate``), in ``cwd``;
    - ``pidfile``: SIGKILLs the pid written there, if it still runs;
    - ``group``: SIGTERMs that process group's leader (a server started in a
      session of its own), then SIGKILLs the whole group after :data:`GRACE`;
    - ``remove``: deletes these folders.
    """

    def __init__(
        self,
        *,
        command: Sequence[str] = (),
        cwd: Path | None = None,
        pidfile: Path | None = None,
        group: int | None = None,
        remove: Sequence[Path] = (),
    ) -> None:
        spec = {
            "owner": os.getpid(),
            "command": list(command),
            "cwd": None if cwd is None else str(cwd),
            "pidfile": None if pidfile is None else str(pidfile),
            "group": group,
            "remove": [str(path) for path in remove],
        }
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            # -I -S: the standard library only, none of the caller's paths.
            [sys.executable, "-I", "-S", __file__, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int | None:
        """The watchdog's pid, while it runs."""
        return None if self.proc is None else self.proc.pid

    def release(self) -> None:
        """Tell the watchdog the server was stopped by its owner; it exits doing nothing."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write(b"release\n")
            proc.stdin.flush()
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the watchdog process ---------------------------------------------------------


def _owner_gone(owner: int) -> bool:
    """Wait on stdin until the owner releases us (False) or is gone (True)."""
    received = b""
    while True:
        if os.getppid() != owner:
            return True
        ready, _, _ = select.select([0], [], [], POLL)
        if not ready:
            continue
        chunk = os.read(0, 64)
        received += chunk
        if b"release" in received:
            return False
        if not chunk:
            # The pipe closed without a release: the owner died (or dropped us).
            return True


def _reap(spec: dict[str, Any]) -> None:
    """Stop the server as ``spec`` says, and remove its folders."""
    if spec["command"]:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                spec["command"],
                cwd=spec["cwd"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=GRACE + 10,
                check=False,
            )
    if spec["pidfile"]:
        pid = _pid_in(spec["pidfile"])
        if pid is not None and alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    group = spec["group"]
    if group is not None and _group_alive(group):
        with contextlib.suppress(OSError):
            os.kill(group, signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        while _group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    for folder in spec["remove"]:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str]) -> int:
    """The watchdog: wait for the owner, and reap if it went without releasing."""
    spec: dict[str, Any] = json.loads(argv[0])
    if _owner_gone(spec["owner"]):
        _reap(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
