"""``qapp serve``: a worker that dies is replaced while the others keep serving, on either server.

Plain hypercorn stops the whole server when one worker dies
(tests/test_faults_sqlite.py); the supervisor behind ``qapp serve`` starts a
replacement instead, on the same sockets.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from qapp.testing import HypercornServer
from tests.loadgen import Load, http, integrity, kill_worker, stored_counter, values, worker_pids

pytestmark = pytest.mark.slow

WORKERS = 4
CLIENTS = 100


def live_workers(server: HypercornServer, tries: int = 400) -> set[int]:
    """The worker pids answering /health on fresh connections, once all have been seen."""
    seen: set[int] = set()
    for _ in range(tries):
        pid = server.worker_pid()
        if pid is not None:
            seen.add(pid)
        if len(seen) == WORKERS:
            break
    return seen


@pytest.mark.parametrize("server_kind", ["hypercorn", "granian"])
async def test_killed_worker_is_replaced_and_the_others_keep_serving(
    tmp_path: Path, server_kind: str
) -> None:
    """SIGKILL one of 4 workers mid-load: the rest keep answering, a new worker takes its place,
    and no answered increment is lost or repeated."""
    db = tmp_path / "qapp.db"
    env = {"QAPP_STORE_URL": f"sqlite://{db}", "QAPP_INSTANCE_PATH": str(tmp_path)}
    with HypercornServer(workers=WORKERS, env=env, supervised=True, server=server_kind) as server:
        before = await asyncio.to_thread(live_workers, server)
        async with http(server.url, CLIENTS) as client:
            load = Load(client, "POST", "/counter/atomic", CLIENTS)
            load.start()
            await load.wait_for(1000)
            victim = min(worker_pids(load.answers))
            kill_worker(victim)
            killed = time.monotonic()
            await asyncio.sleep(0.5)
            # At most CLIENTS answers still due were sent before this moment, so
            # the rest of these were sent after it: the load goes on until 150 have
            # come, however slow the machine (the wait fails after 60 s).
            await load.wait_for(len(load.answers) + CLIENTS + 150)
            answers = await load.stop()
        after = await asyncio.to_thread(live_workers, server)
        assert server.proc is not None
        assert server.proc.poll() is None, "the supervisor itself must not exit"
        # SIGTERM to the parent alone still shuts everything down cleanly.
        server.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.proc.wait, 30) == 0

    assert len(before) == WORKERS
    assert victim in before
    assert victim not in after
    assert len(after) == WORKERS
    assert len(after - before) == 1
    # Only the connections the dead worker held failed, at the moment of the
    # kill, and only as connection errors: never an HTTP error status.
    assert {a.status for a in answers} <= {200, None}
    late = [a for a in answers if a.sent > killed + 0.5]
    assert len(late) >= 150
    assert all(a.ok for a in late)
    answered = values(answers)
    assert len(set(answered)) == len(answered)
    assert integrity(db) == "ok"
    assert stored_counter(db, "atomic") >= max(answered)
