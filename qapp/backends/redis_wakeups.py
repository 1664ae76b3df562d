"""Redis pub/sub for :meth:`~qapp.state.Store.listen`: one subscription per worker, many listeners.

A waiter that polls a key costs the store a read per waiter per poll, and
hears of the change up to a poll late. With Redis every worker of every host
can be told instead: :meth:`RedisStore.notify <qapp.backends.redis.RedisStore.notify>`
publishes on the channel of a name, and each listener is woken at once.

A subscription per listener would cost a connection (or a round trip) per
waiter. Each worker keeps one connection instead, outside the store's pool,
with one pattern subscription to every channel of its database
(``qapp:w:<db>:*``), and wakes the listeners of the name a message names.
Notifications are rare (one per computation, say), so hearing those of names
nobody here listens for costs little.

A notification is a hint, never a promise: while the connection is down
(``Wakeup.pushes`` is then False) listeners are woken to look for themselves
and should poll, and Redis keeps no message for a subscriber that was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from qapp.state import Wakeup

__all__ = ["Wakeups"]

log = logging.getLogger(__name__)

#: Seconds a first listener waits for the subscription before it goes on polling.
SUBSCRIBE_WAIT = 1.0
#: Seconds before the first and (doubling) the longest retry after the connection fails.
RETRY_FIRST = 0.05
RETRY_MAX = 2.0


class Wakeups:
    """One worker's pub/sub connection to Redis, shared by every listener of one store."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        #: Every channel's name starts with it: ``qapp:w:<db>:``.
        self.prefix = prefix
        self._listeners: dict[str, set[asyncio.Event]] = {}
        self._subscribed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    def channel(self, name: str) -> str:
        """The channel that carries the notifications of ``name``."""
        return self.prefix + name

    @contextlib.asynccontextmanager
    async def listen(self, name: str) -> AsyncIterator[Wakeup]:
        """Be woken by each notification of ``name`` while inside the block."""
        event = asyncio.Event()
        listeners = self._listeners.setdefault(name, set())
        listeners.add(event)
        try:
            if self._reader is None:
                self._reader = asyncio.create_task(self._read(), name="qapp-redis-wakeups")
            if not self._subscribed.is_set():
                # Until Redis confirms the subscription a notification could be
                # missed; a listener that cannot wait for it simply polls.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SUBSCRIBE_WAIT):
                        await self._subscribed.wait()
            yield Wakeup(event, self._subscribed.is_set)
        finally:
            listeners.discard(event)
            if not listeners and self._listeners.get(name) is listeners:
                del self._listeners[name]

    def _wake(self, name: str | None = None) -> None:
        groups = self._listeners.values() if name is None else [self._listeners.get(name, set())]
        for listeners in groups:
            for event in listeners:
                event.set()

    async def _read(self) -> None:
        """Keep the subscription and hand out what it hears, reconnecting until closed."""
        delay = RETRY_FIRST
        while True:
            # No retry inside redis-py: a broken connection must surface here,
            # where listeners are told to look for themselves.
            client = aioredis.Redis.from_url(
                self.url,
                decode_responses=True,
                socket_connect_timeout=2.0,
                socket_keepalive=True,
                retry=Retry(NoBackoff(), 0),
            )
            pubsub = client.pubsub()
            try:
                await pubsub.psubscribe(self.prefix + "*")
                async for message in pubsub.listen():
                    if message["type"] == "psubscribe":
                        self._subscribed.set()
                        delay = RETRY_FIRST
                    elif message["type"] == "pmessage":
                        self._wake(str(message["channel"]).removeprefix(self.prefix))
            except (redis.exceptions.RedisError, OSError) as exc:
                log.debug("Redis wake-ups interrupted (%s); retrying in %gs", exc, delay)
            finally:
                self._subscribed.clear()
                # A notification may have been missed: every listener looks again.
                self._wake()
                with contextlib.suppress(redis.exceptions.RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def aclose(self) -> None:
        """Stop listening and close the connection."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
