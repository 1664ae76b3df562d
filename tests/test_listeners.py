"""One listening socket per worker: what ``qapp serve`` binds, and how connections spread."""

from __future__ import annotations

import asyncio
import json
import selectors
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from hypercorn.config import Config, Sockets

from qapp.server.listeners import close_all, worker_sockets
from qapp.testing import HypercornServer


@contextmanager
def slots_for(workers: int, bind: str = "127.0.0.1:0") -> Iterator[list[Sockets]]:
    config = Config()
    config.bind = [bind]
    config.workers = workers
    slots = worker_sockets(config)
    try:
        yield slots
    finally:
        close_all(slots)


def listeners(slots: list[Sockets]) -> list[socket.socket]:
    return [s for sockets in slots for s in sockets.insecure_sockets]


def test_each_worker_gets_its_own_socket_on_one_port() -> None:
    """Three workers: three listening sockets, SO_REUSEPORT and TCP_NODELAY set, one shared port."""
    with slots_for(3) as slots:
        socks = listeners(slots)
        assert len(socks) == 3
        assert len({id(s) for s in socks}) == 3
        ports = {s.getsockname()[1] for s in socks}
        assert len(ports) == 1
        assert ports.pop() != 0
        for sock in socks:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            # Accepted sockets inherit it: without it, Nagle and delayed ACKs
            # hold small answers back for 40 ms.
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_kernel_spreads_new_connections_over_the_workers_sockets() -> None:
    """300 connections to the port land on all three sockets, each with at least half its share."""
    with slots_for(3) as slots, ExitStack() as clients:
        socks = listeners(slots)
        for sock in socks:
            # What each worker's asyncio server does with its socket.
            sock.listen(1024)
        port = socks[0].getsockname()[1]
        for _ in range(300):
            client = clients.enter_context(socket.create_connection(("127.0.0.1", port)))
            client.setblocking(False)
        accepted: Counter[int] = Counter()
        with selectors.DefaultSelector() as selector:
            for n, sock in enumerate(socks):
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ, n)
            while sum(accepted.values()) < 300:
                ready = selector.select(timeout=5)
                assert ready, f"only {sum(accepted.values())} of 300 connections arrived"
                for key, _ in ready:
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    clients.enter_context(conn)
                    accepted[key.data] += 1
    assert sorted(accepted) == [0, 1, 2]
    assert min(accepted.values()) >= 50, accepted


def test_one_worker_has_one_set() -> None:
    with slots_for(1) as slots:
        assert len(slots) == 1
        assert len(listeners(slots)) == 1


def test_unix_socket_binds_are_shared(tmp_path: Path) -> None:
    """A unix: bind cannot be balanced by the kernel: every worker shares one socket."""
    with slots_for(3, f"unix:{tmp_path / 'qapp.sock'}") as slots:
        assert len(slots) == 3
        assert len({id(s) for s in listeners(slots)}) == 1


def test_close_all_closes_every_socket() -> None:
    with slots_for(2) as slots:
        socks = listeners(slots)
    assert all(s.fileno() == -1 for s in socks)


async def _health_burst(url: str, clients: int) -> Counter[int]:
    """``clients`` new connections at once, one ``GET /health`` each: answers per worker pid."""
    host, port = url.removeprefix("http://").split(":")

    async def one() -> int:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        raw = await reader.read()
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        pid: int = json.loads(body)["worker"]
        return pid

    return Counter(await asyncio.gather(*(one() for _ in range(clients))))


@pytest.mark.slow
async def test_qapp_serve_spreads_a_burst_of_connections_over_its_workers(tmp_path: Path) -> None:
    """qapp serve, 2 workers: 400 simultaneous new connections are answered by both, evenly."""
    db = tmp_path / "qapp.db"
    env = {"QAPP_STORE_URL": f"sqlite://{db}", "QAPP_INSTANCE_PATH": str(tmp_path)}
    with HypercornServer(workers=2, env=env) as server:
        answered = await _health_burst(server.url, 400)
    assert len(answered) == 2, answered
    assert min(answered.values()) >= 100, answered
