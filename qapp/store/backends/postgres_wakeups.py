"""PostgreSQL's wake-ups: one LISTEN connection per worker, outside the store's pool.

:meth:`qapp.store.backends.postgres.PostgresStore.notify` sends ``pg_notify`` on
one channel; each listening worker keeps one connection LISTENing there and
wakes the listeners of the name a notification's payload names
(:class:`~qapp.store.backends.wakeups.WakeupReader` keeps the listeners).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable

from asyncpg import Connection

from qapp.store.backends.postgres_sql import WAKEUP_CHANNEL
from qapp.store.backends.wakeups import WakeupReader
from qapp.store.lease import Wakeup

__all__ = ["Wakeups", "payload"]

log = logging.getLogger(__name__)

#: Seconds a first listener waits for LISTEN before it goes on polling.
LISTEN_WAIT = 1.0
#: Seconds between checks that the listening connection still answers: a
#: connection cut without a word (a dead host, a dropped route) shows up here.
LISTEN_CHECK = 5.0
#: Seconds before the first and (doubling) the longest retry after it fails.
RETRY_FIRST = 0.05
RETRY_MAX = 2.0


def payload(name: str) -> str:
    """What a notification of ``name`` carries: a digest, so that any name fits.

    A payload is text of at most 8000 bytes without NUL, and a name may be
    longer or hold NUL. Two names that shared a digest would only wake each
    other's listeners to look again.
    """
    return hashlib.blake2b(name.encode("utf-8"), digest_size=16).hexdigest()


class Wakeups(WakeupReader):
    """One worker's LISTEN connection, outside the pool, shared by every listener of one store.

    A connection per listener would cost one per waiter. This one LISTENs on
    :data:`WAKEUP_CHANNEL`, where every notification of the database goes,
    and wakes the listeners of the name its payload names.
    """

    task_name = "qapp-postgres-wakeups"
    ready_wait = LISTEN_WAIT

    def __init__(
        self,
        connect: Callable[[], Awaitable[Connection]],
        unavailable: tuple[type[BaseException], ...],
    ) -> None:
        super().__init__("")
        #: Opens a new connection (outside the store's pool).
        self._connect = connect
        #: The errors that mean "the server cannot answer now": reconnect.
        self._unavailable = unavailable
        self._listening = asyncio.Event()
        # Set once the first connection has listened or failed: a listener
        # waits for that, not LISTEN_WAIT, while the server is down.
        self._tried = asyncio.Event()

    def listen(self, name: str) -> contextlib.AbstractAsyncContextManager[Wakeup]:
        """Be woken by each notification of ``name`` while inside the block."""
        return self._listen(payload(name))

    def _ready(self) -> asyncio.Event:
        return self._tried

    def _pushes(self) -> bool:
        return self._listening.is_set()

    def _heard(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._wake(str(payload))

    async def _read(self) -> None:
        """Keep a connection listening, reconnecting until closed."""
        delay = RETRY_FIRST
        while True:
            conn: Connection | None = None
            try:
                conn = await self._connect()
                await self._hold(conn)
            except self._unavailable as exc:
                log.debug("PostgreSQL wake-ups interrupted (%s); retrying in %gs", exc, delay)
            finally:
                self._tried.set()
                if self._listening.is_set():
                    # A notification may have been missed: every listener
                    # looks again, and the retry comes soon.
                    self._listening.clear()
                    self._wake()
                    delay = RETRY_FIRST
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _hold(self, conn: Connection) -> None:
        """LISTEN on ``conn``, and return once it is lost; raise if it stops answering."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        await conn.add_listener(WAKEUP_CHANNEL, self._heard)
        self._listening.set()
        self._tried.set()
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LISTEN_CHECK):
                    await lost.wait()
            if not lost.is_set():
                await conn.fetchval("SELECT 1")

    async def aclose(self) -> None:
        """Stop listening and close the connection."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
