"""Redis Cluster: keys sharded over several masters, each with replicas that take over.

``redis+cluster://[:password@]host:port[,host:port]`` names any nodes of the
cluster (``rediss+cluster://`` for TLS; the options are
:mod:`~qapp.store.backends.redis_urls`'). Cluster has database 0 only, so the URL
has no path. Everything but the client and the key names is
:class:`~qapp.store.backends.redis.RedisStore`'s.

Keys and hash tags. A Lua script may only touch keys of one slot, so every
Redis key is its name in braces, a *hash tag*: ``qapp:k:{<key>}``,
``qapp:l:{<lock>}``. Redis hashes only the text between the first ``{`` and
the first ``}`` after it, so:

- keys spread over every slot, and so over every master;
- taking a lock issues its fencing token in the same script, from a counter
  in the lock's slot: ``qapp:fence:{<tag>}``, whose tag is a short text
  chosen to hash to that slot (:func:`fence_key`). One counter per slot, at
  most 16,384 keys whatever the number of lock names, and each name's tokens
  rise because a name always hashes to the same slot (a slot that moves to
  another master takes its counter along);
- a fenced write (:meth:`~qapp.state.Store.set_fenced`) checks the lock's
  holder and writes the key in one script, so the key and the lock name must
  share a slot: use the same name for both, or start both with one tag of
  your own, Redis's way (lock ``{order:7}``, key ``{order:7}:total``: both
  hash ``{order:7``). Anything else is refused with ValueError before it
  reaches Redis.

What happens when a master dies: the commands for its slots fail
(:class:`~qapp.state.StoreUnavailable`, 503) until its replica takes over,
and are never sent twice: redis-py's cluster client would re-send a command
whose connection broke, and is told not to (``retry`` with 0 retries). A
``MOVED`` or ``ASK`` answer means the command did not run, and redis-py
follows it. After a failure the client learns the layout again on its next
command. Keys of the other masters keep working, provided the servers run
with ``cluster-require-full-coverage no`` (with ``yes``, Redis refuses every
key while any slot has no master).

redis-py's cluster pool raises instead of waiting when a node's connections
are all busy; the store's slots (one per connection, as in RedisStore) keep
that from happening. :meth:`~qapp.state.Store.listen` wakes the listeners of
this worker only here (``Wakeup.pushes`` is False, so waiters poll).
"""

from __future__ import annotations

import contextlib
import functools
from binascii import crc_hqx
from typing import Any

import redis.exceptions
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.crc import key_slot

from qapp.store.backends.redis import (
    DATA_PREFIX,
    FAILURES,
    FENCE_KEY,
    LOCK_PREFIX,
    POOL_OPTIONS,
    RedisStore,
    _Client,
)
from qapp.store.backends.redis_sentinel import LocalWakeups, client_options
from qapp.store.backends.redis_urls import Durability, parse_topology
from qapp.store.errors import ConfigurationError
from qapp.store.urls import redact

__all__ = ["ClusterStore"]

#: The port of a node named without one.
CLUSTER_PORT = 6379
#: Connections per node beyond the store's slots: room to re-learn the layout
#: (CLUSTER SLOTS) while every slot is busy on that node.
SPARE_CONNECTIONS = 2
#: Answers that mean the command did not run because the layout changed.
REDIRECTS = (redis.exceptions.AskError, redis.exceptions.TryAgainError)
#: Redis Cluster's hash slots: a key's slot is the CRC16 of its tag, modulo this.
SLOTS = 16384
#: The tag of :func:`fence_key` before it is adjusted to a slot: four backquotes,
#: whose four low bits each (16 bits in all) are flipped to reach any slot,
#: giving one of `` ` a b … o``, never a brace.
FENCE_TAG_BASE = b"````"


def tagged(prefix: str, name: str) -> str:
    """``prefix{name}``: the Redis key of ``name``, hashed on ``name`` (see the module doc)."""
    return f"{prefix}{{{name}}}"


def _slot_of(tag: bytes) -> int:
    """The slot of a key whose hash tag is ``tag`` (which holds no brace)."""
    # CRC16/XMODEM, as Redis hashes keys: with no initial value and no final
    # xor, it is linear over the bits of messages of one length.
    return crc_hqx(tag, 0) % SLOTS


@functools.cache
def _flip_basis() -> tuple[tuple[int, int], ...]:
    """Bit flips of :data:`FENCE_TAG_BASE` that reach every slot: (slot bits, flips) pairs.

    Each flip of one low bit of one byte changes the slot by a fixed xor (the
    CRC is linear); Gaussian elimination over GF(2) keeps 14 independent ones,
    each with a distinct leading bit, which is as many as a slot has bits.
    """
    basis: list[tuple[int, int]] = []
    for flip in range(len(FENCE_TAG_BASE) * 4):
        diff = bytearray(len(FENCE_TAG_BASE))
        diff[flip // 4] = 1 << (flip % 4)
        value, flips = _slot_of(bytes(diff)), 1 << flip
        for bits, more in basis:
            if value ^ bits < value:  # bits' leading bit is set in value: clear it
                value, flips = value ^ bits, flips ^ more
        if value:
            basis = sorted([*basis, (value, flips)], reverse=True)
    if len(basis) != SLOTS.bit_length() - 1:
        raise AssertionError("the fence tag's flips do not reach every slot")
    return tuple(basis)


def fence_key(slot: int) -> str:
    """``qapp:fence:{<tag>}``: the fence counter of the locks of hash slot ``slot``.

    The tag is :data:`FENCE_TAG_BASE` with the bit flips that move its slot
    to ``slot``, found by solving one xor equation, not by a search.
    """
    value, flips = slot ^ _slot_of(FENCE_TAG_BASE), 0
    for bits, more in _flip_basis():
        if value ^ bits < value:
            value, flips = value ^ bits, flips ^ more
    tag = bytearray(FENCE_TAG_BASE)
    for flip in range(len(tag) * 4):
        if flips >> flip & 1:
            tag[flip // 4] ^= 1 << (flip % 4)
    return f"{FENCE_KEY}:{{{tag.decode()}}}"


class ClusterStore(LocalWakeups, RedisStore):
    """A store sharded over the masters of a Redis Cluster, followed across failovers."""

    scheme = "redis+cluster"
    lean_commands = False

    def _check_url(self) -> None:
        self.topology = parse_topology(self.client_url, CLUSTER_PORT)
        if self.topology.path:
            raise ConfigurationError(
                f"{redact(self.url)!r} has a path; Redis Cluster has database 0 only"
            )

    def _data_key(self, key: str) -> str:
        return tagged(DATA_PREFIX, key)

    def _lock_key(self, name: str) -> str:
        return tagged(LOCK_PREFIX, name)

    def _fence_key(self, name: str) -> str:
        return fence_key(key_slot(self._lock_key(name).encode()))

    def _check_one_slot(self, keys: list[str]) -> None:
        if len({key_slot(key.encode()) for key in keys}) > 1:
            raise ValueError(
                f"on Redis Cluster a fenced write's key and its lock must share a hash tag: "
                f"{keys} are in different slots; name both {{tag}}… with one tag"
            )

    def _new_client(self) -> tuple[Any, int]:
        topology = self.topology
        size: int = topology.options.get("max_connections", POOL_OPTIONS["max_connections"])
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in topology.hosts],
            decode_responses=True,
            max_connections=size + SPARE_CONNECTIONS,
            # Patch the slot a MOVED names; never close every node's connections
            # (what redis-py does every few MOVED), which would fail the
            # commands in flight on healthy masters too.
            reinitialize_steps=0,
            **client_options(topology.options),
            **topology.credentials(),
        )
        return client, size

    async def connect(self) -> None:
        """Learn the cluster's layout (which master has which slots) before serving."""
        async with self._command() as client:
            await client.redis.initialize()

    async def _send_and_wait(
        self, client: _Client, route: str, command: tuple[str | int, ...], wait: Durability
    ) -> tuple[Any, Any]:
        # WAIT has no key, so redis-py's cluster client would send it to some
        # node on some connection; it must follow the write on the write's own.
        cluster: RedisCluster = client.redis
        await cluster.initialize()  # nothing to do unless a failure asked for it
        node = cluster.get_node_from_key(route)
        if node is None:
            raise redis.exceptions.SlotNotCoveredError(f"no master serves {route!r}")
        steps = [PipelineCommand(0, *command), PipelineCommand(1, "WAIT", wait.replicas, wait.ms)]
        try:
            await node.execute_pipeline(steps)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            await self._relearn(cluster)
            raise
        for step in steps:
            if isinstance(step.result, REDIRECTS):
                # Not run: the slot moved. Fail this once; the next command
                # goes to the new owner.
                await self._relearn(cluster)
            if isinstance(step.result, Exception):
                raise step.result
        return steps[0].result, steps[1].result

    # --- many keys and scans (qapp.store.backends.redis_keys) -------------------

    def _slot_groups(self, stored: list[str]) -> list[list[str]]:
        groups: dict[int, list[str]] = {}
        for key in stored:
            groups.setdefault(key_slot(key.encode()), []).append(key)
        return list(groups.values())

    async def _scan_targets(self) -> list[Any]:
        async with self._command() as client:
            cluster: RedisCluster = client.redis
            await cluster.initialize()  # nothing to do unless a failure asked for it
            return list(cluster.get_primaries())

    async def _scan_page(
        self, client: Any, target: Any, cursor: int, pattern: str, batch: int
    ) -> tuple[int, list[str]]:
        cursors, found = await client.redis.scan(
            cursor=cursor, match=pattern, count=batch, target_nodes=target
        )
        return int(cursors[target.name]), list(found)

    @staticmethod
    async def _relearn(cluster: RedisCluster) -> None:
        """Read the layout again now; if no node answers, the next command will try."""
        with contextlib.suppress(*FAILURES):
            await cluster.nodes_manager.initialize()
