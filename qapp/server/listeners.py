"""Listening sockets for ``qapp serve``: one per worker, so the kernel spreads connections.

hypercorn's parent binds one listening socket and every worker accepts from
it. How evenly that spreads connections depends on the event loop, and
neither choice is good under a burst of new connections:

- asyncio accepts greedily: one readiness event takes up to ``backlog``
  connections. On a shared socket the first worker to wake takes most of a
  burst and keeps those connections for their whole keep-alive life, while
  the other workers idle. With 2 workers and 1,000 new connections, the
  second worker got almost none and throughput was that of one worker.
- uvloop accepts one connection per turn of its loop (libuv's
  ``uv__server_io`` calls ``accept`` once per readiness event). A busy
  worker turns its loop some tens of times a second, so a burst of 1,000
  connections waited in the kernel's accept queue for up to 5 s: wrk saw a
  p99 of 4 s on a route whose median was 0.2 s.

With ``SO_REUSEPORT`` (Linux 3.9+) each worker gets a listening socket of
its own on the same address, and the kernel hashes every new connection to
one of them. Each worker then accepts greedily from its own queue (asyncio),
and no worker can take another's share. The parent keeps every socket open,
so a replacement for a dead worker takes over that worker's socket and the
connections waiting in its queue.

Departure from the project's first plan, which preferred ``worker_class = "uvloop"`` because
uvloop workers stayed balanced on hypercorn's shared socket: they do, but
only because each accepts so slowly, and the 1,000-connection benchmark
showed what that costs. ``hypercorn.toml`` names asyncio workers, and the
balance comes from the kernel instead. uvloop with an accept loop of its own
was measured at 3 to 10 % more requests per second, not enough to carry a
hand-written replacement for asyncio's server.

Where the sockets cannot be made that way (a ``unix:`` or ``fd://`` bind,
QUIC, a platform whose ``SO_REUSEPORT`` does not balance), every worker
shares one set, as under plain hypercorn.
"""

from __future__ import annotations

import copy
import errno
import logging
import socket
import sys

from hypercorn.config import Config, Sockets

log = logging.getLogger("qapp.listeners")


def _all(sockets: Sockets) -> list[socket.socket]:
    return [*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets]


def close_all(slots: list[Sockets]) -> None:
    """Close every socket of every worker slot (a shared set only once)."""
    for sock in {id(s): s for sockets in slots for s in _all(sockets)}.values():
        sock.close()


def _balanceable(config: Config) -> bool:
    """True if ``config`` binds only TCP host:port addresses on Linux."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        # Elsewhere SO_REUSEPORT may hand every connection to one socket.
        return False
    binds = [*config.bind, *(config.insecure_bind if config.ssl_enabled else [])]
    if config.ssl_enabled and config.quic_bind:
        return False
    return all(not b.startswith(("unix:", "fd://")) for b in binds)


def _address(sock: socket.socket) -> str:
    """``host:port`` of a bound TCP socket, IPv6 hosts in brackets."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


#: What a failed bind means, where the system's own words do not say.
HINTS = {
    errno.EADDRNOTAVAIL: "that is not an address of this machine",
    errno.EACCES: "ports below 1024 need privileges; choose a higher port",
}


class CannotBind(OSError):
    """An address this server was told to bind cannot be listened on; ``strerror`` says why."""


class AddressInUse(CannotBind):
    """Another server already listens on an address this one was told to bind."""


def _tcp_binds(config: Config) -> list[tuple[str, int]]:
    found = []
    for bind in [*config.bind, *(config.insecure_bind if config.ssl_enabled else [])]:
        if bind.startswith(("unix:", "fd://")):
            continue
        host, _, port = bind.rpartition(":")
        if port.isdigit() and int(port) != 0:
            found.append((host.strip("[]") or "0.0.0.0", int(port)))
    return found


def refuse_busy(config: Config) -> None:
    """Raise :class:`AddressInUse` if anything listens on an address ``config`` binds.

    Any other reason the address cannot be bound (a host that does not
    resolve, or is not this machine's; a port below 1024 without the right
    to it) raises :class:`CannotBind`, saying which.

    Each worker's socket sets ``SO_REUSEPORT``, and so may any other
    server's: the kernel would then let a second server bind the same port
    and split the connections between the two, silently (two servers on
    two SQLite files handed out the same numbers). A probe bound *without*
    ``SO_REUSEPORT`` fails while any socket listens there, whoever owns it.
    """
    for host, port in _tcp_binds(config):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR: a server that just stopped leaves connections in
            # TIME_WAIT, which must not count as busy; a listener still does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except socket.gaierror as exc:
                raise CannotBind(
                    exc.errno, f"cannot resolve host {host!r} ({exc.strerror})"
                ) from None
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise AddressInUse(
                        exc.errno,
                        f"{host}:{port} is already in use by another server ({exc.strerror})",
                    ) from None
                why = HINTS.get(exc.errno or 0, exc.strerror)
                raise CannotBind(exc.errno, f"cannot listen on {host}:{port}: {why}") from None


def worker_sockets(config: Config) -> list[Sockets]:
    """One set of listening sockets per worker of ``config``, in worker order.

    Each set is bound by hypercorn's own ``create_sockets`` (so TCP_NODELAY,
    the backlog and TLS binds are as hypercorn makes them), on the addresses
    the first set actually got: a bind to port 0 gives every worker the same
    port. hypercorn sets ``SO_REUSEPORT`` before binding when there are
    several workers; if the kernel still refuses a second bind, every worker
    shares the first set.
    """
    refuse_busy(config)
    first = config.create_sockets()
    if config.workers < 2 or not _balanceable(config):
        return [first] * max(config.workers, 1)
    pinned = copy.copy(config)
    if config.ssl_enabled:
        pinned.bind = [_address(s) for s in first.secure_sockets]
        pinned.insecure_bind = [_address(s) for s in first.insecure_sockets]
    else:
        pinned.bind = [_address(s) for s in first.insecure_sockets]
    slots = [first]
    try:
        for _ in range(config.workers - 1):
            slots.append(pinned.create_sockets())
    except OSError as exc:
        log.warning("one listening socket per worker failed (%s); workers share one", exc)
        close_all(slots[1:])
        return [first] * config.workers
    return slots
