"""Several hosts on one machine: network namespaces joined by veth pairs, links that can be cut.

A test that claims something "across hosts" should have hosts whose network
can fail separately. :class:`Network` makes them with Linux network
namespaces: each :meth:`~Network.host` is a namespace with its own
interfaces, each :meth:`~Network.link` a veth pair with a /24 of
``10.77.x.0`` (the first free ``x``) between two namespaces (``None`` is
this machine's own). Traffic never leaves the machine. Servers run inside
with ``ip netns exec`` (:meth:`~Network.prefix`), and :meth:`~Network.cut`
takes a link down the way a pulled cable would::

    with Network() as net:
        a, store = net.host("a"), net.host("store")
        to_a = net.link(None, a)          # this machine <-> a: the clients' way in
        a_store = net.link(a, store)      # a <-> store
        ...
        net.cut(a_store)                  # a loses the store, nothing else does

Needs root (CAP_NET_ADMIN) and ``ip`` (Debian: ``apt-get install iproute2``);
:class:`NetnsError` says which is missing. Everything made is removed on
exit, even after a failure: the processes left in the namespaces are killed,
then the namespaces deleted, which deletes their interfaces.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import Self

__all__ = ["Link", "NetnsError", "Network"]

#: The /16 whose /24s the links use.
SUBNET = "10.77"


class NetnsError(RuntimeError):
    """A namespace or link could not be made; the message says why and what to install."""


def ip(*args: str, namespace: str | None = None) -> str:
    """Run ``ip args`` (in ``namespace`` if given); its output, or NetnsError if it fails."""
    if shutil.which("ip") is None:
        raise NetnsError("`ip` not found: install iproute2 (Debian: apt-get install iproute2)")
    argv = ["ip", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Link:
    """A veth pair: end ``a`` in namespace ``ns_a`` at ``addr_a``, end ``b`` likewise."""

    ns_a: str | None
    ns_b: str | None
    dev_a: str
    dev_b: str
    addr_a: str
    addr_b: str


class Network:
    """Namespaces and links of one test, all removed on exit; see the module docstring."""

    def __init__(self, tag: str | None = None) -> None:
        # Short: interface names have 15 characters at most.
        self.tag = tag or f"q{os.getpid() % 100_000}"
        self.namespaces: list[str] = []
        self.links: list[Link] = []

    def host(self, name: str) -> str:
        """A new namespace (its loopback up); its name, for :meth:`link` and :meth:`prefix`."""
        namespace = f"qapp-{self.tag}-{name}"
        try:
            ip("netns", "add", namespace)
        except NetnsError as exc:
            raise NetnsError(
                f"cannot create network namespace {namespace}: {exc} "
                "(the multi-host tests need root, or CAP_NET_ADMIN, and iproute2)"
            ) from None
        self.namespaces.append(namespace)
        ip("link", "set", "lo", "up", namespace=namespace)
        return namespace

    def _free_subnet(self) -> int:
        used = ip("-4", "-o", "addr") + ip("-4", "route")
        taken = {int(x) for x in range(1, 255) if f"{SUBNET}.{x}." in used}
        taken |= {int(link.addr_a.split(".")[2]) for link in self.links}
        start = os.getpid() % 200
        for offset in range(254):
            x = (start + offset) % 254 + 1
            if x not in taken:
                return x
        raise NetnsError(f"no free /24 left in {SUBNET}.0.0/16")

    def link(self, a: str | None, b: str | None) -> Link:
        """A veth pair between ``a`` and ``b`` (None: this machine), addresses .1 and .2, up."""
        x = self._free_subnet()
        n = len(self.links)
        dev_a, dev_b = f"{self.tag}l{n}a", f"{self.tag}l{n}b"
        ip("link", "add", dev_a, "type", "veth", "peer", "name", dev_b)
        link = Link(a, b, dev_a, dev_b, f"{SUBNET}.{x}.1", f"{SUBNET}.{x}.2")
        self.links.append(link)
        for dev, namespace, address in ((dev_a, a, link.addr_a), (dev_b, b, link.addr_b)):
            if namespace is not None:
                ip("link", "set", dev, "netns", namespace)
            ip("addr", "add", f"{address}/24", "dev", dev, namespace=namespace)
            ip("link", "set", dev, "up", namespace=namespace)
        return link

    @staticmethod
    def prefix(namespace: str) -> list[str]:
        """The start of a command line that runs the rest inside ``namespace``."""
        return ["ip", "netns", "exec", namespace]

    def cut(self, link: Link) -> None:
        """Take the link down at its ``a`` end: nothing passes either way until :meth:`restore`."""
        ip("link", "set", link.dev_a, "down", namespace=link.ns_a)

    def restore(self, link: Link) -> None:
        """Bring a cut link back up."""
        ip("link", "set", link.dev_a, "up", namespace=link.ns_a)

    def close(self) -> None:
        """Kill what still runs in the namespaces, delete them and every link."""
        for namespace in reversed(self.namespaces):
            with contextlib.suppress(NetnsError):
                for pid in ip("netns", "pids", namespace).split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(NetnsError):
                ip("netns", "del", namespace)
        for link in self.links:
            # An end left on this machine (by design, or by a failed move)
            # outlives the namespaces; deleting one end deletes the pair.
            for dev in (link.dev_a, link.dev_b):
                with contextlib.suppress(NetnsError):
                    ip("link", "del", dev)
        self.namespaces, self.links = [], []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
