"""Redis pub/sub for :meth:`~qapp.state.Store.listen`: one subscription per worker, many listeners.

A waiter that polls a key costs the store a read per waiter per poll, and
hears of the change up to a poll late. With Redis every worker of every host
can be told instead: :meth:`RedisStore.notify <qapp.store.backends.redis.RedisStore.notify>`
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

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from qapp.store.backends.wakeups import WakeupReader
from qapp.store.lease import Wakeup

__all__ = ["Wakeups"]

log = logging.getLogger(__name__)

#: Seconds a first listener waits for the subscription before it goes on polling.
SUBSCRIBE_WAIT = 1.0
#: Seconds before the first and (doubling) the longest retry after the connection fails.
RETRY_FIRST = 0.05
RETRY_MAX = 2.0


class Wakeups(WakeupReader):
    """One worker's pub/sub connection to Redis, shared by every listener of one store."""

    task_name = "qapp-redis-wakeups"
    ready_wait = SUBSCRIBE_WAIT

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(url)
        #: Every channel's name starts with it: ``qapp:w:<db>:``.
        self.prefix = prefix
        self._subscribed = asyncio.Event()

    def channel(self, name: str) -> str:
        """The channel that carries the notifications of ``name``."""
        return self.prefix + name

    def listen(self, name: str) -> contextlib.AbstractAsyncContextManager[Wakeup]:
        """Be woken by each notification of ``name`` while inside the block."""
        return self._listen(name)

    def _ready(self) -> asyncio.Event:
        return self._subscribed

    def _pushes(self) -> bool:
        return self._subscribed.is_set()

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
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in older redis-py
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
