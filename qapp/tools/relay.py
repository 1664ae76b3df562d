"""A TCP relay that can hold a stream back, then cut it: replication lag on demand.

On loopback a replica receives every write within microseconds, so a
failover loses nothing that anyone could measure. Put a :class:`Relay`
between the master and its replicas (``replicaof 127.0.0.1 <relay port>``)
and the lag becomes whatever the test wants: :meth:`Relay.hold` stops
passing bytes on (what the relay has read stays with it, the rest waits in
the kernel), :meth:`Relay.cut` then drops every held byte and closes every
connection, as a master that dies with writes not yet sent would.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Self

__all__ = ["Relay"]


class Relay:
    """Forward connections from a free loopback port to ``upstream``; hold or cut on demand."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        # Set while bytes flow; cleared by hold().
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> Self:
        self._spawn(self._accept)
        return self

    def _spawn(self, target: object, *args: object) -> None:
        assert callable(target)
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {downstream, upstream}
            self._spawn(self._pump, upstream, downstream)
            self._spawn(self._pump, downstream, upstream)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                # While held, the chunk just read waits here and the rest in
                # the kernel; a cut drops them all.
                while not self._flowing.wait(0.05):
                    if self._closed.is_set():
                        return
                if self._closed.is_set():
                    return
                target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def hold(self) -> None:
        """Stop passing bytes on, in both directions; the connections stay open."""
        self._flowing.clear()

    def release(self) -> None:
        """Pass bytes on again, the held ones first."""
        self._flowing.set()

    def cut(self) -> None:
        """Drop every held byte and close every connection and the listener."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cut()
