"""Fenced locks: every holder gets a strictly increasing token, and a superseded holder's write
is refused, in the store, however late it wakes up.

:class:`TestFencing` is conformance: it runs here on memory, SQLite, Redis and PostgreSQL,
and in tests/test_state_topologies.py on Sentinel and Cluster. The last test
pauses a real lock holder (another process) with SIGSTOP past its lease,
200 times.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from qapp.state import Lease, StaleLease, Store, open_store
from qapp.store.backends.sqlite import SQLiteStore

#: The backends of this module's ``store`` (conftest's list less those without fencing yet).
FENCED_BACKENDS = ["memory", "sqlite", "redis", "postgresql"]


@pytest.fixture(params=FENCED_BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of each backend that fences writes, in turn."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


class TestFencing:
    # Each fenced key shares its lock's hash tag ({f}…): on Redis Cluster a
    # fenced write's key and lock must share a slot, and this is how.
    async def test_tokens_strictly_increase_per_name(self, store: Store) -> None:
        """Each acquisition of a lock gets a greater token than the one before."""
        tokens = []
        for _ in range(5):
            async with store.lock("{f}", wait=1) as lease:
                tokens.append(lease.token)
        async with store.lease("{f}", wait=1) as held:
            tokens.append(held.token)
        assert tokens == sorted(tokens)
        assert len(set(tokens)) == len(tokens)
        assert tokens[0] >= 1

    async def test_current_holder_writes(self, store: Store) -> None:
        """The holder of the newest token writes through its lease, with a ttl if it likes."""
        async with store.lock("{f}") as lease:
            await lease.set("{f}:doc", {"v": 1})
            await store.set_fenced("{f}:tmp", "x", lease, ttl=0.1)
        assert await store.get("{f}:doc") == {"v": 1}
        await asyncio.sleep(0.2)
        assert await store.get("{f}:tmp") is None

    async def test_superseded_holder_is_refused(self, store: Store) -> None:
        """Once the lock is taken again, the older lease's write is refused; nothing changes."""
        async with store.lock("{f}") as old:
            await old.set("{f}:doc", "old")
        async with store.lock("{f}") as new:
            await new.set("{f}:doc", "new")
        with pytest.raises(StaleLease):
            await old.set("{f}:doc", "late")
        with pytest.raises(StaleLease):
            await store.set_fenced("{f}:other", "late", old)
        assert await store.get("{f}:doc") == "new"
        assert await store.get("{f}:other") is None

    async def test_released_lease_cannot_write(self, store: Store) -> None:
        """Once its lock is released a lease writes nothing, though nobody took the lock since."""
        async with store.lock("{f}") as lease:
            await lease.set("{f}:doc", "held")
        with pytest.raises(StaleLease):
            await lease.set("{f}:doc", "released")
        assert await store.get("{f}:doc") == "held"

    async def test_names_are_fenced_apart(self, store: Store) -> None:
        """Taking one lock does not stale the lease of another."""
        async with store.lock("a") as a:
            async with store.lock("b"):
                pass
            await a.set("a", 1)
        assert await store.get("a") == 1

    async def test_namespace_lease_writes_in_its_namespace(self, store: Store) -> None:
        """A lease taken through a namespace view writes that view's keys and is fenced there."""
        view = store.namespace("ns")
        async with view.lock("f") as lease:
            await lease.set("f", 1)
        assert await store.get("ns:f") == 1
        async with store.lock("ns:f"):
            pass
        with pytest.raises(StaleLease):
            await lease.set("f", 2)
        assert await view.get("f") == 1


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgresql"])
async def test_lapsed_lease_cannot_write(backend: str, request: pytest.FixtureRequest) -> None:
    """A holder whose lease ran out writes nothing, even while nobody has taken the lock."""
    url: str = request.getfixturevalue(f"{backend}_url")
    async with await open_store(url) as store, store.lock("{f}", timeout=0.1) as lease:
        await lease.set("{f}:doc", "in time")
        await asyncio.sleep(0.3)
        with pytest.raises(StaleLease):
            await lease.set("{f}:doc", "too late")
        assert await store.get("{f}:doc") == "in time"


async def test_sqlite_fences_of_the_per_name_schema_carry_over(tmp_path: Path) -> None:
    """A SQLite file whose lock rows each kept their name's fence gets the store's counter
    above every one of them on open, so no name's tokens go back; its free rows are swept."""
    path = tmp_path / "older.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE qapp_locks (
                name TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at REAL NOT NULL,
                fence INTEGER NOT NULL DEFAULT 0
            ) WITHOUT ROWID;
            INSERT INTO qapp_locks VALUES ('l', '', 0, 41), ('m', '', 0, 7), ('n', '', 0, 3);
            """
        )
    conn.close()
    async with await open_store(f"sqlite://{path}") as store:
        tokens = []
        for name in ("m", "l"):
            async with store.lock(name) as lease:
                tokens.append(lease.token)
        assert isinstance(store, SQLiteStore)
        await store.sweep()  # what a writer starts in the background
    assert tokens == [42, 43]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM qapp_locks").fetchone() == (0,)
    conn.close()


# --- a real holder, paused past its lease ---------------------------------------

#: The paused holder's lease, in seconds: short, so 200 rounds take seconds.
LEASE = 0.05
ROUNDS = 200

#: The paused holder: takes the lock, says so, waits for a line, then tries
#: its fenced write and says whether it was accepted.
HOLDER = """
import asyncio, sys
from qapp.state import StaleLease, open_store

async def main(url, rounds, lease):
    async with await open_store(url) as store:
        for n in range(rounds):
            async with store.lock("{fenced}", timeout=lease, wait=30) as held:
                print("held", held.token, flush=True)
                await asyncio.to_thread(sys.stdin.readline)
                try:
                    await held.set("{fenced}:doc", {"by": "paused", "round": n})
                except StaleLease:
                    print("refused", flush=True)
                else:
                    print("accepted", flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


def start_holder(url: str, rounds: int) -> subprocess.Popen[str]:
    """The paused holder's process, talking over its stdin and stdout."""
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, str(rounds), str(LEASE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )


async def paused_holder_rounds(url: str, rounds: int = ROUNDS) -> tuple[int, int]:
    """Pause a holder past its lease while this process takes the lock and writes, ``rounds``
    times; return (stale writes accepted, rounds whose newer write survived)."""
    child = start_holder(url, rounds)
    assert child.stdin is not None
    assert child.stdout is not None
    accepted = survived = 0
    try:
        async with await open_store(url) as store:
            for n in range(rounds):
                line = await asyncio.to_thread(child.stdout.readline)
                assert line.startswith("held"), line
                paused_token = int(line.split()[1])
                os.kill(child.pid, signal.SIGSTOP)
                # Waits out the paused holder's lease, then writes as the new holder.
                async with store.lock("{fenced}", timeout=5, wait=5) as mine:
                    assert mine.token > paused_token
                    await mine.set("{fenced}:doc", {"by": "new", "round": n})
                os.kill(child.pid, signal.SIGCONT)
                child.stdin.write("go\n")
                child.stdin.flush()
                verdict = (await asyncio.to_thread(child.stdout.readline)).strip()
                assert verdict in {"accepted", "refused"}, verdict
                accepted += verdict == "accepted"
                survived += await store.get("{fenced}:doc") == {"by": "new", "round": n}
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()
    return accepted, survived


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgresql"])
async def test_holder_paused_past_its_lease_never_overwrites(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """200 times: a holder SIGSTOPped past its lease, resumed after a newer holder wrote, is
    refused, and the newer write stays."""
    url: str = request.getfixturevalue(f"{backend}_url")
    accepted, survived = await paused_holder_rounds(url)
    assert (accepted, survived) == (0, ROUNDS)


def test_lease_without_a_store_cannot_write() -> None:
    """A Lease made by hand, not handed out by a store, refuses to write rather than guess where."""
    with pytest.raises(RuntimeError, match="not handed out"):
        asyncio.run(Lease("x", 1.0, 1).set("k", 1))
