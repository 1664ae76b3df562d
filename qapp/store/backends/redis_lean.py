"""One Redis command on one connection, without redis-py's client layers around it.

A store call such as ``get`` is one command and one reply. Through
``redis.asyncio.Redis.execute_command`` it also passes a retry wrapper, the
pool's condition and its own timeout, per-command observability hooks and,
because a socket timeout is set, an ``asyncio.wait_for`` around the write,
which on Python 3.11 starts a task per command: together about as much CPU
as the command itself, and on a route that makes one to three store calls
the largest share of qapp's own time (docs/benchmarks.md has the figures).

:class:`LeanCommands` keeps that short path and the same guarantees:

- Connections are redis-py's own (``Connection``, ``SSLConnection`` or
  ``UnixDomainSocketConnection``, made by a plain ``ConnectionPool`` from the
  store's URL), so the handshake, TLS, AUTH, SELECT, RESP3 parsing, reply
  decoding and the periodic health check are redis-py's.
- The time limit is one ``asyncio.timeout`` around the write and the read:
  a command that takes longer than ``socket_timeout`` fails as before, and
  its connection is closed (redis-py closes a connection whose read is
  interrupted), so a late reply can never be read as another command's.
- A command that fails because its connection broke (Redis restarted, or
  closed an idle connection) is sent once more, on that connection
  connected afresh, as the store's redis-py ``Retry`` does; any other
  failure is raised as it comes.
- An error reply (``ResponseError``) leaves the connection in use: its reply
  was read whole.

It holds no limit of its own: the store's semaphore lets no more commands
run at once than it has slots, so no more connections than that are ever
open here (besides those of redis-py's pool, which pipelines, durable
writes and pub/sub still use).
Redis Sentinel and Redis Cluster keep redis-py's client, which finds the
master, follows redirects and refreshes the slot layout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

__all__ = ["LeanCommands"]

#: Seconds before the one retry on a fresh connection, as the store's Retry backs off.
RETRY_AFTER = 0.01


class LeanCommands:
    """Single commands on idle connections of their own; see the module doc."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        # The URL's query wins over ``options``, as for the store's own pool.
        pool = aioredis.ConnectionPool.from_url(url, decode_responses=True, **options)
        kwargs = dict(pool.connection_kwargs)
        # The limit is applied around each command instead (see _on):
        # redis-py's own would wrap every write in a task.
        limit = kwargs.pop("socket_timeout", None)
        pool.connection_kwargs = {**kwargs, "socket_timeout": None}
        self._make: Callable[[], Any] = pool.make_connection
        self._timeout: float | None = None if limit is None else float(limit)
        self._idle: list[Any] = []
        self._closed = False

    async def execute(self, *command: str | int) -> Any:
        """Send ``command``, return its reply; redis-py's errors as redis-py raises them."""
        conn = self._idle.pop() if self._idle else self._make()
        try:
            return await self._on(conn, command)
        except redis.exceptions.ConnectionError:
            # The connection broke (a restart, an idle socket the server
            # closed) and is closed now: once more, connecting it afresh.
            await asyncio.sleep(RETRY_AFTER)
            return await self._on(conn, command)

    async def _on(self, conn: Any, command: tuple[str | int, ...]) -> Any:
        """``command`` on ``conn``: kept for the next command unless it failed midway."""
        try:
            async with asyncio.timeout(self._timeout):
                await conn.send_command(*command)
                reply = await conn.read_response()
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise redis.exceptions.TimeoutError(
                f"Timeout: no reply within {self._timeout:g}s"
            ) from None
        except redis.exceptions.ResponseError:
            await self._keep(conn)
            raise
        except BaseException:
            # redis-py has closed it already when the write or read broke;
            # closing again is a no-op, and covers every other path out.
            await conn.disconnect(nowait=True)
            raise
        await self._keep(conn)
        return reply

    async def _keep(self, conn: Any) -> None:
        if self._closed:
            # Closed while the command ran: nothing may stay open after close.
            await conn.disconnect(nowait=True)
        else:
            self._idle.append(conn)

    async def aclose(self) -> None:
        """Close every idle connection; one in use closes when its command ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect()
