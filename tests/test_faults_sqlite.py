"""Crashes on the SQLite store: a worker SIGKILLed mid-load, and one killed holding the lock.

What hypercorn does when one of its workers dies (measured with hypercorn
0.18): it does **not** respawn it. The parent sees the worker exit, stops
every other worker and exits itself, with the status of the workers it
stopped (0 or 241), not of the crash. So one crashed worker takes the whole
server down within a fraction of a second, and only a supervisor that
restarts hypercorn on *any* exit (systemd ``Restart=always``;
``on-failure`` misses an exit status of 0) brings it back.

Plain granian (2.x) without ``respawn_failed_workers`` does the same,
exiting with status 1. ``qapp serve`` replaces the dead worker on either
server (tests/test_supervisor.py).

What qapp itself must guarantee, and what these tests prove on both
servers, is that the crash costs no acknowledged data and leaves nothing
that blocks the restarted (or any other) server for longer than a lock's lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qapp.service.counters import LOCK_LEASE
from qapp.testing import HypercornServer
from tests.loadgen import (
    Answer,
    Load,
    http,
    integrity,
    kill_worker,
    send,
    server_exited,
    stored_counter,
    values,
    worker_pids,
)

pytestmark = pytest.mark.slow

#: Concurrent clients sending ``POST /counter/atomic`` while a worker is killed.
CLIENTS = 100


#: The exit statuses of a plain server whose worker was killed: hypercorn
#: exits with its surviving workers' status (0 if they stopped on their own,
#: 241 = -SIGTERM if terminated: measured both), granian with 1.
PLAIN_EXIT = {"hypercorn": {0, 256 - signal.SIGTERM}, "granian": {1}}


@pytest.fixture(scope="module", params=["hypercorn", "granian"])
def server_kind(request: pytest.FixtureRequest) -> str:
    """Which HTTP server runs the workers: every crash below happens on both."""
    kind: str = request.param
    return kind


@dataclass
class Crash:
    """What one SIGKILL of one worker mid-load left behind."""

    server: str
    db: Path
    answers: list[Answer]
    victim: int
    killed: float
    exited_at: float
    exit_status: int | None
    refused_after: bool
    integrity: str
    stored: int
    after_restart: list[Answer]


async def crash_one_worker(server: HypercornServer, db: Path) -> Crash:
    """Run atomic increments, SIGKILL one worker, watch the server, restart it."""
    async with http(server.url, CLIENTS) as client:
        load = Load(client, "POST", "/counter/atomic", CLIENTS)
        load.start()
        await load.wait_for(1500)
        # A worker that has been answering; its pid, not the parent's.
        victim = min(worker_pids(load.answers))
        assert victim != server.pid
        kill_worker(victim)
        killed = time.monotonic()
        exited = await asyncio.to_thread(server_exited, server)
        exited_at = time.monotonic()
        # Keep the clients knocking for a while: nothing answers any more.
        await asyncio.sleep(1.0)
        answers = await load.stop()
    assert exited
    assert server.proc is not None
    exit_status = server.proc.returncode
    async with http(server.url, 1) as fresh:
        refused_after = (await send(fresh, "GET", "/health")).error == "ConnectError"
    # The supervisor's job: start hypercorn again, same port, same file.
    server.stop()
    checked = integrity(db)
    stored = stored_counter(db, "atomic")
    server.start()
    async with http(server.url, 20) as client:
        after_restart = await asyncio.gather(
            *(send(client, "POST", "/counter/atomic") for _ in range(200))
        )
    return Crash(
        server.server,
        db,
        answers,
        victim,
        killed,
        exited_at,
        exit_status,
        refused_after,
        checked,
        stored,
        after_restart,
    )


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory, server_kind: str) -> Iterator[Crash]:
    """One crash per server, shared by the tests below, each checking one thing it must keep."""
    instance = tmp_path_factory.mktemp(f"crash-{server_kind}")
    db = instance / "crash.db"
    env = {"QAPP_STORE_URL": f"sqlite://{db}", "QAPP_INSTANCE_PATH": str(instance)}
    # The plain server, not `qapp serve`: what it does on a crash is under test.
    with HypercornServer(workers=4, env=env, supervised=False, server=server_kind) as server:
        yield asyncio.run(crash_one_worker(server, db))


def test_database_intact_after_worker_sigkill(crash: Crash) -> None:
    """PRAGMA integrity_check is ok after a worker was SIGKILLed in the middle of writes."""
    assert crash.integrity == "ok"


def test_every_answered_increment_is_counted(crash: Crash) -> None:
    """Every number answered with a 200 is unique and within the count the file kept."""
    answered = values(crash.answers)
    assert len(answered) >= 1500
    assert len(set(answered)) == len(answered)
    assert crash.stored >= max(answered)
    # On top of the answered ones, at most the increments in flight at the
    # kill were committed without an answer reaching the client.
    assert crash.stored - len(answered) <= CLIENTS
    # Requests that failed did so only because the server went away:
    # connection errors, never an HTTP error status.
    assert {a.status for a in crash.answers} <= {200, None}
    print(
        f"\nworker SIGKILL: {len(crash.answers)} requests, {len(answered)} answered 200 "
        f"(unique, max {max(answered)}), {len(crash.answers) - len(answered)} connection "
        f"errors; the file kept {crash.stored}; integrity_check {crash.integrity}"
    )


def test_plain_server_stops_all_workers_when_one_is_killed(crash: Crash) -> None:
    """Plain hypercorn 0.18 and granian 2 do not respawn a killed worker: they stop the rest."""
    assert crash.exit_status in PLAIN_EXIT[crash.server]
    assert crash.refused_after
    assert crash.exited_at - crash.killed < 5.0
    late = [a for a in crash.answers if a.sent > crash.exited_at]
    assert late
    assert not any(a.ok for a in late)


def test_restarted_server_carries_on_counting(crash: Crash) -> None:
    """After a restart on the same file, numbers continue from the stored count, none repeated."""
    assert [a.status for a in crash.after_restart] == [200] * len(crash.after_restart)
    assert sorted(values(crash.after_restart)) == list(
        range(crash.stored + 1, crash.stored + 1 + len(crash.after_restart))
    )
    assert not set(values(crash.after_restart)) & set(values(crash.answers))


def lock_row(db: Path, name: str) -> tuple[str, float] | None:
    """The token and expiry (wall clock) of a held store lock, read from the file."""
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        row = conn.execute("SELECT token, expires_at FROM qapp_locks WHERE name = ?", (name,))
        found = row.fetchone()
    if found is None or found[1] <= time.time():
        return None
    return str(found[0]), float(found[1])


def stop_inside_critical_section(pid: int, db: Path) -> tuple[str, float]:
    """SIGSTOP ``pid`` until it is caught holding the shared-locked lock; return the lock.

    Only ``pid`` sends shared-locked requests, so a lock that is held, and
    stays the same while ``pid`` is stopped, is ``pid``'s.
    """
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.02)
        held = lock_row(db, "counter:shared-locked")
        time.sleep(0.05)
        if held is not None and lock_row(db, "counter:shared-locked") == held:
            return held
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.01 + (time.monotonic() % 0.03))
    raise AssertionError("never caught the worker inside its critical section")


async def test_worker_killed_holding_the_lock_blocks_others_only_for_the_lease(
    tmp_path: Path, server_kind: str
) -> None:
    """A worker SIGKILLed inside shared-locked blocks other servers' requests only for its lease."""
    db = tmp_path / "lock.db"
    env = {"QAPP_STORE_URL": f"sqlite://{db}", "QAPP_INSTANCE_PATH": str(tmp_path)}
    # Two servers on one file, as two services on one host: B has a single
    # worker, which will die holding the lock; A must carry on.
    # B is the plain server, so that nothing replaces its dead worker.
    b_server = HypercornServer(workers=1, env=env, supervised=False, server=server_kind)
    with HypercornServer(workers=2, env=env, server=server_kind) as a, b_server as b:
        async with http(b.url, 20) as on_b:
            load = Load(on_b, "POST", "/counter/shared-locked", 20)
            load.start()
            await load.wait_for(200)
            holder = min(worker_pids(load.answers))
            token, expires_at = await asyncio.to_thread(stop_inside_critical_section, holder, db)
            kill_worker(holder)
            killed_wall = time.time()
            answered_by_b = await load.stop()
        # The dead worker's lock is still in the file, with its lease running.
        assert lock_row(db, "counter:shared-locked") == (token, expires_at)
        before = stored_counter(db, "shared-locked")

        async with http(a.url, 50) as on_a:
            began_wall, began = time.time(), time.monotonic()
            answers = await asyncio.gather(
                *(send(on_a, "POST", "/counter/shared-locked") for _ in range(50))
            )

    # Every request waited for the lease rather than failing: all 200, none
    # before the dead holder's lease ran out, and the last well before the
    # lock's wait limit.
    assert [x.status for x in answers] == [200] * 50
    first = began_wall + (min(x.answered for x in answers) - began)
    assert first >= expires_at - 0.05
    assert expires_at - killed_wall <= LOCK_LEASE
    numbers = values(answers)
    assert sorted(numbers) == list(range(before + 1, before + 51))
    assert not set(numbers) & set(values(answered_by_b))
    print(
        f"\nlock holder killed: lease left {expires_at - killed_wall:.2f} s; "
        f"first answer {first - killed_wall:.2f} s after the kill; "
        f"50/50 answered 200, numbers {before + 1}..{before + 50}"
    )
