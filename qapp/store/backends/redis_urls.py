"""Store URLs of the Redis family: several hosts in one URL, and the durable-writes option.

Sentinel and Cluster URLs follow the conventions of the ``limits`` library::

    redis+sentinel://[:password@]host:port[,host:port]/service[/db]
    redis+cluster://[:password@]host:port[,host:port]

``rediss+sentinel://`` and ``rediss+cluster://`` speak TLS. The hosts are the
sentinels (default port 26379) or any nodes of the cluster (default 6379):
the client learns the rest from them. The password is given to the
sentinels and to Redis alike. The query may set ``socket_timeout``,
``socket_connect_timeout`` and ``max_connections`` (per worker), and for TLS
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` and ``ssl_cert_reqs``.

Every Redis URL (``redis://`` too) may ask for durable writes::

    redis+sentinel://h1:26379,h2:26379/qapp?wait_replicas=1&wait_timeout=0.5
    redis+sentinel://h1:26379/qapp?durable=1            # the same, in short

Each write (``set``, ``add``, ``incr``, ``delete``, ``expire``, taking a lock,
a fenced write) is then acknowledged only after ``WAIT`` has seen
``wait_replicas`` replicas hold it, within ``wait_timeout`` seconds; fewer in
time is :class:`~qapp.state.StoreUnavailable` (HTTP 503). A failover that
promotes the most up-to-date replica then keeps every write a caller was told
of: the failover analogue of an atomic increment. The write itself may still
have happened on the master (a number used up, a key added), exactly as when
a reply is lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from redis.asyncio.connection import parse_url

from qapp.store.errors import ConfigurationError
from qapp.store.urls import redact
from qapp.store.values import is_on

__all__ = ["Durability", "Topology", "check_client_url", "parse_topology", "split_durability"]

#: Seconds ``WAIT`` may take when the URL names no ``wait_timeout``.
DEFAULT_WAIT_TIMEOUT = 0.5
#: The query options that carry durability; qapp reads them, redis-py never sees them.
DURABILITY_OPTIONS = ("durable", "wait_replicas", "wait_timeout")
#: What a Sentinel or Cluster URL's query may set, and the type of each.
TOPOLOGY_OPTIONS: dict[str, type] = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "max_connections": int,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": str,
}


@dataclass(frozen=True)
class Durability:
    """Writes wait until ``replicas`` replicas hold them, ``timeout`` seconds at most."""

    replicas: int
    timeout: float

    @property
    def ms(self) -> int:
        """The timeout as ``WAIT`` takes it: whole milliseconds, at least 1."""
        return max(1, math.ceil(self.timeout * 1000))


def _number(url: str, name: str, raw: str, kind: type) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} in {redact(url)!r} is not a number") from None
    if isinstance(value, int | float) and (not math.isfinite(value) or value <= 0):
        raise ConfigurationError(f"{name} in {redact(url)!r} must be positive, not {raw!r}")
    return value


def split_durability(url: str) -> tuple[str, Durability | None]:
    """``url`` without the durability options, and the :class:`Durability` they ask for."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {name: raw for name, raw in query if name in DURABILITY_OPTIONS}
    if not ours:
        return url, None
    rest = urlencode([(name, raw) for name, raw in query if name not in DURABILITY_OPTIONS])
    client_url = urlunsplit(parts._replace(query=rest))
    durable = is_on(ours.get("durable", ""))
    if "wait_replicas" in ours:
        replicas = _number(url, "wait_replicas", ours["wait_replicas"], int)
    elif durable:
        replicas = 1
    elif ours.get("durable", "0").lower() in {"0", "false", "no", "off"}:
        if "wait_timeout" in ours:
            raise ConfigurationError(f"wait_timeout without wait_replicas in {redact(url)!r}")
        return client_url, None
    else:
        raise ConfigurationError(f"durable must be 1 or 0 in {redact(url)!r}")
    timeout = DEFAULT_WAIT_TIMEOUT
    if "wait_timeout" in ours:
        timeout = _number(url, "wait_timeout", ours["wait_timeout"], float)
    return client_url, Durability(replicas, timeout)


def check_client_url(url: str, client_url: str) -> None:
    """Raise :class:`ConfigurationError` unless ``client_url`` names a Redis server and database.

    ``client_url`` is ``url`` (a ``redis://``, ``rediss://`` or ``unix://``
    URL) without qapp's own options. redis-py reads a database it cannot make
    a number of (``redis://h:6379/abc``) as database 0, and accepts port 0
    and a negative database; each is refused here, before any connection.
    """
    try:
        options = parse_url(client_url)
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL {redact(url)!r}: {exc}") from exc
    parts = urlsplit(client_url)
    if parts.scheme.lower() != "unix":
        path = unquote(parts.path).strip("/")
        if path and not path.isdigit():
            raise ConfigurationError(
                f"bad Redis URL {redact(url)!r}: the database {path!r} is not a number 0 or more, "
                "as in redis://host:6379/0"
            )
        if options.get("port") == 0:
            raise ConfigurationError(f"bad Redis URL {redact(url)!r}: port 0; use 1 to 65535")
    if options.get("db", 0) < 0:
        raise ConfigurationError(
            f"bad Redis URL {redact(url)!r}: the database must be a number 0 or more"
        )


@dataclass(frozen=True)
class Topology:
    """What a Sentinel or Cluster URL names: hosts, credentials, path and options."""

    hosts: list[tuple[str, int]]
    tls: bool
    username: str | None
    password: str | None
    #: The path's parts: ``[service]`` or ``[service, db]`` for Sentinel, ``[]`` for Cluster.
    path: list[str]
    #: The query's options, typed (see :data:`TOPOLOGY_OPTIONS`).
    options: dict[str, Any] = field(default_factory=dict)

    def credentials(self) -> dict[str, Any]:
        """The keyword arguments that authenticate and secure a connection."""
        found: dict[str, Any] = {"username": self.username, "password": self.password}
        if self.tls:
            found["ssl"] = True
            found.update({k: v for k, v in self.options.items() if k.startswith("ssl_")})
        return found


def _host(url: str, text: str, default_port: int) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or "]" in port:  # no port, or the colon was inside [IPv6]
        host, port = text, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"bad host {text!r} in {redact(url)!r}")
    return host, int(port)


def parse_topology(url: str, default_port: int) -> Topology:
    """Read a ``redis+sentinel://`` or ``redis+cluster://`` URL (durability already split off).

    Raises:
        ConfigurationError: a host, port or option is malformed or unknown.
    """
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    if not hosts:
        raise ConfigurationError(f"no host in {redact(url)!r}")
    options: dict[str, Any] = {}
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        kind = TOPOLOGY_OPTIONS.get(name)
        if kind is None:
            known = ", ".join(TOPOLOGY_OPTIONS)
            raise ConfigurationError(f"unknown option {name!r} in {redact(url)!r}; known: {known}")
        options[name] = raw if kind is str else _number(url, name, raw, kind)
    return Topology(
        hosts=[_host(url, text, default_port) for text in hosts.split(",")],
        tls=parts.scheme.lower().startswith("rediss"),
        username=unquote(username) or None,
        password=unquote(password) or None,
        path=[unquote(part) for part in parts.path.split("/") if part],
        options=options,
    )
