"""A Redis master watched by Sentinel, on free loopback ports: what ``qapp race --failover`` kills.

:class:`RedisSentinel` starts a master, its replicas and the sentinels that
watch them as real ``redis-server`` processes, waits until Sentinel knows
them all, and stops every process on exit, like
:class:`~qapp.testing.RedisServer`::

    with RedisSentinel(replicas=2) as sentinel:  # 1 master, 2 replicas, 3 sentinels
        store = await open_store(sentinel.url)  # redis+sentinel://…/qapp

Failure is quick on purpose: a master is judged down after ``down_after`` ms
(default 1 s), so a failover comes in a few seconds. With ``relay=True`` the
replicas replicate through a :class:`~qapp.tools.relay.Relay`, which can
hold replication back before the master dies.

It uses redis-py's synchronous client, so it needs the ``redis`` extra.
:class:`Topology`, :func:`admin` and :func:`wait_for` are shared with the
test suite's Redis Cluster.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Self

import redis

from qapp.testing.servers import RedisServer, ServerError, _Process, free_port, redis_server_binary
from qapp.tools.relay import Relay

__all__ = ["RedisSentinel", "SentinelServer", "Topology", "admin", "wait_for"]


def admin(port: int) -> redis.Redis:
    """A plain client of one server, for setting up and inspecting topologies."""
    return redis.Redis(port=port, decode_responses=True, socket_timeout=2)


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll ``check`` until it is true; the monotonic time it was. ServerError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return time.monotonic()
        time.sleep(0.05)
    raise ServerError(f"{what}: not within {timeout:g}s")


class Topology:
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
        with contextlib.suppress(redis.RedisError), admin(self.port) as client:
            return bool(client.ping())
        return False


class RedisSentinel(Topology):
    """A master, ``replicas`` replicas and ``sentinels`` sentinels watching them, on loopback.

    With ``relay=True`` the replicas replicate through a :class:`~qapp.tools.relay.Relay`
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
        wait_for("replicas in sync", self._replicas_online, timeout)
        for sentinel in self.sentinels:
            sentinel.start()
        wait_for("sentinels ready", self._sentinels_ready, timeout)
        return self

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.cut()
        super().stop()

    def _replicas_online(self) -> bool:
        with admin(self.master.port) as client:
            info = client.info("replication")
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return len([r for r in online if r.get("state") == "online"]) == len(self.replicas)

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            with admin(sentinel.port) as client:
                state = client.sentinel_master(self.service)
                if int(state["num-slaves"]) < len(self.replicas):
                    return False
                if int(state["num-other-sentinels"]) < len(self.sentinels) - 1:
                    return False
        return True

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError), admin(sentinel.port) as client:
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
            with admin(int(port)) as client:
                return bool(client.info("replication")["role"] == "master")

        return wait_for("a replica promoted", promoted, timeout)

    def flushall(self) -> None:
        """Empty the master (the replicas follow)."""
        with admin(self.current_master().port) as client:
            client.flushall()

    def replicas_of(self, port: int) -> Sequence[RedisServer]:
        """The servers that replicate from the server on ``port`` (directly) and are in sync."""
        with admin(port) as client:
            info = client.info("replication")
        ports = {
            int(v["port"])
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        }
        return [s for s in self.servers if s.port in ports]
