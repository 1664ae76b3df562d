"""A small load generator for the fault and load tests: every request's fate, timed.

Each :class:`Answer` records when a request was sent and answered, and what
came back: a status and body, or the client-side error that ended it (a
timeout, a refused or reset connection). The fault tests then reason about
time windows ("every request sent 2 s after Redis was back got a 200"), so
nothing is averaged away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from qapp.testing import KEEPALIVE_EXPIRY, HypercornServer

#: Seconds a client waits for any one answer before it counts as hung. Inside
#: the app every store operation is bounded (Redis: 5 s for a pool slot, 2 s
#: to connect, 5 s per reply; SQLite: a 5 s busy_timeout), so a request that
#: is still unanswered after this is stuck, not slow. The margin is for a
#: 2-core machine shared with other work.
REQUEST_TIMEOUT = 15.0


@dataclass
class Answer:
    """One request's fate: sent and answered on the monotonic clock, status or error."""

    sent: float
    answered: float
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


async def send(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Answer:
    """Send one request and record its fate; client errors are recorded, not raised."""
    sent = time.monotonic()
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        return Answer(sent, time.monotonic(), error=type(exc).__name__)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Answer(sent, time.monotonic(), response.status_code, body, dict(response.headers))


@dataclass
class Load:
    """``concurrency`` tasks sending one request each after another until stopped."""

    client: httpx.AsyncClient
    method: str
    path: str
    concurrency: int
    #: Seconds a task pauses after a failure, so an outage is polled, not spun on.
    pause: float = 0.02
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _answered: asyncio.Condition = field(default_factory=asyncio.Condition)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _run(self) -> None:
        while not self._stop.is_set():
            answer = await send(self.client, self.method, self.path)
            self.answers.append(answer)
            async with self._answered:
                self._answered.notify_all()
            if not answer.ok:
                await asyncio.sleep(self.pause)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self.concurrency)]

    async def stop(self) -> list[Answer]:
        """Stop sending; wait for every request in flight to be answered."""
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), REQUEST_TIMEOUT + 5)
        return self.answers

    async def wait_for(self, count: int) -> None:
        """Wait until at least ``count`` answers have come back (at most a minute)."""
        async with asyncio.timeout(60), self._answered:
            await self._answered.wait_for(lambda: len(self.answers) >= count)


@contextlib.asynccontextmanager
async def http(url: str, connections: int) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client with at most ``connections`` connections, each request bounded."""
    limits = httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT, limits=limits) as c:
        yield c


def worker_pids(answers: Iterable[Answer]) -> set[int]:
    """The workers named in the ``worker`` field of successful answers."""
    return {a.body["worker"] for a in answers if a.ok and isinstance(a.body, dict)}


def values(answers: Iterable[Answer]) -> list[int]:
    """The numbers handed out by the successful answers."""
    return [a.body["value"] for a in answers if a.ok]


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of a SQLite file: "ok" when it is intact."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        result: str = db.execute("PRAGMA integrity_check").fetchone()[0]
        return result


def stored_counter(path: Path, strategy: str) -> int:
    """A race-lab counter read straight from the SQLite file, as a restart would find it."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT value FROM qapp_kv WHERE key = ?", (f"counter:{strategy}",))
        found = row.fetchone()
        return int(found[0]) if found else 0


def kill_worker(pid: int) -> None:
    """SIGKILL one worker: a crash of that process alone, not of the server."""
    os.kill(pid, signal.SIGKILL)


def server_exited(server: HypercornServer, timeout: float = 10.0) -> bool:
    """True once hypercorn's parent process has exited (it is not waited on otherwise)."""
    assert server.proc is not None
    with contextlib.suppress(Exception):
        server.proc.wait(timeout)
    return server.proc.poll() is not None
