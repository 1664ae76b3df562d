"""What ``qapp serve`` checks before anything starts: its bind addresses and worker count.

hypercorn reads a bind it cannot use in ways a newcomer does not expect: a
bare ``8011`` becomes the host ``8011`` on port 8000 and fails deep in the
socket code, ``127.0.0.1:99999`` ends in an ``OverflowError``, and
``127.0.0.1:abc`` in a name-resolution error. Each is refused here instead,
in one line that says what a bind looks like; whether a well-formed host
resolves and its port is free is for :func:`qapp.server.listeners.refuse_busy`.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypercorn.config import Config

__all__ = ["ServeConfigError", "check_serving", "parse_bind"]

#: What a bind looks like, for the messages.
EXAMPLE = "127.0.0.1:8000"


class ServeConfigError(ValueError):
    """A bind or worker count that cannot work; the message says which, in one line."""


def parse_bind(text: str) -> tuple[str, int]:
    """``host, port`` of a TCP bind ``HOST:PORT`` (an IPv6 host in brackets: ``[::1]:8000``).

    Raises:
        ServeConfigError: ``text`` is not of that form, or the port is not 1 to 65535.
    """
    if "://" in text:
        raise ServeConfigError(f"{text!r} is a URL; a bind is HOST:PORT, e.g. {EXAMPLE}")
    if text.isdigit() and 1 <= int(text) <= 65535:
        raise ServeConfigError(f"{text!r} has no host: use 127.0.0.1:{text}")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ServeConfigError(f"{text!r} is not [IPV6]:PORT, e.g. [::1]:8000")
        port = rest[1:]
        if not host:
            raise ServeConfigError(f"{text!r} has no host, e.g. [::1]:8000")
    else:
        host, colon, port = text.rpartition(":")
        if not colon:
            host, port = text, ""
        elif ":" in host:
            raise ServeConfigError(f"{text!r}: an IPv6 host goes in brackets, e.g. [::1]:8000")
        if not host and port:
            raise ServeConfigError(
                f"{text!r} has no host: use 127.0.0.1:{port} (0.0.0.0:{port} for every interface)"
            )
    if not port:
        shown = f"[{host}]" if ":" in host else host
        raise ServeConfigError(f"{text!r} has no port: use {shown}:PORT, e.g. {shown}:8000")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ServeConfigError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def _tcp(binds: Iterable[str]) -> list[str]:
    """The binds that name a host and port: not ``unix:`` sockets or inherited ``fd://``."""
    return [bind for bind in binds if not bind.startswith(("unix:", "fd://"))]


def check_serving(config: Config, *, source: str = "--bind") -> None:
    """Refuse a malformed TCP bind or fewer than one worker, before anything is bound.

    ``source`` names where the binds came from (``--bind`` or a config file),
    for the message.

    Raises:
        ServeConfigError: the first thing wrong, in one line.
    """
    binds = [*config.bind, *(config.insecure_bind if config.ssl_enabled else [])]
    if not binds:
        raise ServeConfigError(f"nothing to bind: give --bind HOST:PORT, e.g. {EXAMPLE}")
    for bind in _tcp(binds):
        try:
            parse_bind(bind)
        except ServeConfigError as exc:
            raise ServeConfigError(f"{source} {exc}") from None
    workers = config.workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ServeConfigError(f"workers must be a whole number of at least 1, not {workers!r}")
