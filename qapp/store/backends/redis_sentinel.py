"""Redis behind Sentinel: one master, its replicas, and failover without restarting qapp.

``redis+sentinel://[:password@]host:port[,host:port]/service[/db]`` names the
sentinels and the service they watch (``rediss+sentinel://`` for TLS; the
options are :mod:`~qapp.store.backends.redis_urls`'). Everything but the client is
:class:`~qapp.store.backends.redis.RedisStore`'s: the same keys, scripts, locks
and fencing tokens.

What a failover looks like from qapp:

- Each new connection asks the sentinels where the master is, so once
  Sentinel has promoted a replica every new connection goes there. Pooled
  connections to a dead master are found closed when taken from the pool and
  reopened; an old master that comes back as a replica answers ``READONLY``,
  which closes the connection too. Nothing needs restarting.
- A command in flight when the master dies fails: :class:`~qapp.state.StoreUnavailable`,
  a 503 with Retry-After. redis-py is told never to send it again (no
  retries): an ``INCRBY`` or ``SET NX`` whose answer was lost may have run,
  and run again on the new master it would count twice.
- Until the promotion (Sentinel's ``down-after-milliseconds`` plus an
  election, a few seconds), every command fails fast the same way.
- Replication is asynchronous: writes the master acknowledged but had not yet
  sent to the promoted replica are gone, and counters hand out their numbers
  again. ``?wait_replicas=1`` (or ``?durable=1``) acknowledges each write only
  once a replica holds it; Sentinel promotes the most up-to-date replica, so
  no acknowledged write is lost. Run it with two replicas or more: after a
  failover the new master needs one left to confirm its writes.

:meth:`~qapp.state.Store.listen` wakes the listeners of this worker only here
(``Wakeup.pushes`` is False, so waiters poll): pub/sub across a failover is
left out.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis.asyncio.sentinel as aiosentinel
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from qapp.store.backends.redis import POOL_OPTIONS, RedisStore
from qapp.store.backends.redis_urls import parse_topology
from qapp.store.errors import ConfigurationError
from qapp.store.interface import Store
from qapp.store.lease import Wakeup
from qapp.store.urls import redact

__all__ = ["LocalWakeups", "SentinelStore", "client_options"]

#: The port of a sentinel named without one.
SENTINEL_PORT = 26379


def client_options(options: dict[str, Any]) -> dict[str, Any]:
    """Socket timeouts for redis-py, and a retry policy that never sends a command twice.

    No retries: a command whose connection broke may have run, and ``INCRBY``
    or ``SET NX`` must not run again. A connection that the server closed
    while idle is reopened before use by the pool, so no retry is needed for it.
    """
    return {
        "socket_timeout": options.get("socket_timeout", POOL_OPTIONS["socket_timeout"]),
        "socket_connect_timeout": options.get(
            "socket_connect_timeout", POOL_OPTIONS["socket_connect_timeout"]
        ),
        "retry": Retry(NoBackoff(), 0),
    }


class LocalWakeups(Store):
    """Listeners hear this worker's notifications only; ``Wakeup.pushes`` is False, so they poll.

    For the stores whose client has no plain pub/sub connection to follow
    across a failover (Sentinel, Cluster): put before RedisStore in the bases.
    """

    def listen(self, name: str) -> contextlib.AbstractAsyncContextManager[Wakeup]:
        return Store.listen(self, name)

    async def notify(self, name: str) -> None:
        await Store.notify(self, name)


class SentinelStore(LocalWakeups, RedisStore):
    """A store in the master that Sentinel names, followed across failovers."""

    scheme = "redis+sentinel"
    lean_commands = False

    _sentinel: aiosentinel.Sentinel | None = None

    def _check_url(self) -> None:
        self.topology = parse_topology(self.client_url, SENTINEL_PORT)
        path = self.topology.path
        if len(path) not in (1, 2) or (len(path) == 2 and not path[1].isdigit()):
            raise ConfigurationError(
                f"{redact(self.url)!r} must end in /service or /service/db (a number)"
            )
        self.service = path[0]
        self.db = int(path[1]) if len(path) == 2 else 0

    def _new_client(self) -> tuple[Any, int]:
        topology = self.topology
        size: int = topology.options.get("max_connections", POOL_OPTIONS["max_connections"])
        options = {**client_options(topology.options), **topology.credentials()}
        self._sentinel = aiosentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            topology.hosts, sentinel_kwargs=options
        )
        # The pool does not wait for a free connection; the store's slots
        # (one per connection) make sure it never has to.
        client = self._sentinel.master_for(
            self.service,
            db=self.db,
            decode_responses=True,
            max_connections=size,
            health_check_interval=POOL_OPTIONS["health_check_interval"],
            **options,
        )
        return client, size

    async def disconnect(self) -> None:
        sentinel, self._sentinel = self._sentinel, None
        try:
            await super().disconnect()
        finally:
            if sentinel is not None:
                with contextlib.suppress(OSError):
                    await sentinel.aclose()
