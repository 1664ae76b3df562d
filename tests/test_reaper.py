"""Test servers stop when the process that started them dies, even by SIGKILL.

Each test starts a child Python process that starts one server with
:mod:`qapp.testing`, as a test run would, then SIGKILLs that child: no
``finally``, no teardown. The server's port must stop answering, its
processes must be gone, its folder removed, and the watchdog that did it
must be gone too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qapp.testing import RedisServer
from qapp.testing.reaper import alive

pytestmark = pytest.mark.slow

#: Seconds within which a killed owner's server must be gone: a bound, not a measurement.
BOUND = 30.0

CHILD = """
import json, sys, time
from pathlib import Path
from qapp.testing import HypercornServer, PostgresServer, RedisServer

kind, folder = sys.argv[1], sys.argv[2]
if kind == "postgres":
    server = PostgresServer().__enter__()
    pids = [int(Path(server.datadir, "postmaster.pid").read_text().split()[0])]
    folders = [str(server.root)]
elif kind == "redis":
    server = RedisServer().__enter__()
    pids, folders = [server.pid], [str(server.logdir)]
else:
    env = {"QAPP_STORE_URL": "memory://", "QAPP_INSTANCE_PATH": folder}
    server = HypercornServer(workers=2, env=env, server=kind).__enter__()
    pids, folders = [server.pid], [str(server.logdir)]
print(json.dumps({"port": server.port, "pids": pids, "folders": folders}), flush=True)
time.sleep(600)
"""


def answers(port: int) -> bool:
    """True if something accepts a TCP connection on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def processes(*, group: int | None = None, parent: int | None = None) -> list[int]:
    """Live pids in process group ``group``, or whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid, pgrp = (entry / "stat").read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue
        if state in {"Z", "X"}:
            continue
        if (group is not None and int(pgrp) == group) or (
            parent is not None and int(ppid) == parent
        ):
            found.append(int(entry.name))
    return found


def reapers_of(pid: int, folder: Path | None = None) -> list[int]:
    """The watchdogs whose owner is ``pid`` (and that would delete ``folder``, if given)."""
    found = []
    for child in processes(parent=pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"reaper.py" in cmdline and (folder is None or str(folder).encode() in cmdline):
            found.append(child)
    return found


@pytest.fixture
def owner(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[str]]:
    """A child Python process that started one server of ``request.param``'s kind."""
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, request.param, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as child:
        try:
            yield child
        finally:
            child.kill()


@pytest.mark.parametrize("owner", ["redis", "postgres", "hypercorn", "granian"], indirect=True)
def test_server_stops_when_its_owner_is_killed(owner: subprocess.Popen[str]) -> None:
    """SIGKILL of the process that started a server: its port, processes and folder are gone."""
    assert owner.stdout is not None
    started = json.loads(owner.stdout.readline())
    port, pids, folders = started["port"], started["pids"], started["folders"]
    # hypercorn's and granian's workers share the group of the parent they were started by.
    group = pids[0]
    watched = set(pids) | set(processes(group=group))
    reapers = reapers_of(owner.pid)
    assert answers(port)
    assert len(reapers) == 1

    owner.send_signal(signal.SIGKILL)
    owner.wait()

    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline and (
        answers(port)
        or any(alive(pid) for pid in watched | set(reapers))
        or any(Path(folder).exists() for folder in folders)
    ):
        time.sleep(0.1)
    assert not answers(port)
    assert [pid for pid in watched if alive(pid)] == []
    assert [pid for pid in reapers if alive(pid)] == []
    assert [folder for folder in folders if Path(folder).exists()] == []


def test_a_stopped_server_leaves_no_watchdog() -> None:
    """A server stopped by its owner takes its watchdog with it, and leaves the folder to it."""
    with RedisServer() as server:
        # This process may own other servers (the session's fixtures): look at this one's.
        watchdogs = reapers_of(os.getpid(), server.logdir)
        assert len(watchdogs) == 1
        server.stop()
        assert reapers_of(os.getpid(), server.logdir) == []
        assert not alive(watchdogs[0])
        # Released, the watchdog removed nothing: the owner's exit does that.
        assert server.logdir.exists()
    assert not server.logdir.exists()
