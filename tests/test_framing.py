"""One request framing on hypercorn and on granian, against real ``qapp serve``.

Each live test runs on both servers over raw sockets, since a client
library would never send what is tested: both ``Content-Length`` and
``Transfer-Encoding``, a head past the limit, a head that never ends.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypercorn.config import Config

from qapp.server import granian
from qapp.server.framing import (
    MAX_HEAD,
    MAX_HEADERS,
    FramingGuard,
    guard,
    guarded_path,
    head_size,
)
from qapp.testing import HypercornServer

#: Seconds an idle connection, or an unfinished head, is kept (``--keep-alive``).
KEEP_ALIVE = 2
#: Seconds a socket read waits before the test calls the connection hung.
PATIENCE = 15.0

_STATUS = re.compile(rb"(?:^|\r\n)HTTP/1\.1 (\d{3})")


@pytest.fixture(scope="module", params=["hypercorn", "granian"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HypercornServer]:
    """``qapp serve`` with one worker on each server in turn, keep-alive 2 s, body timeout 1 s."""
    folder = tmp_path_factory.mktemp(f"framing-{request.param}")
    env = {
        "QAPP_STORE_URL": f"sqlite://{folder / 'qapp.db'}",
        "QAPP_INSTANCE_PATH": str(folder),
        "QAPP_BODY_TIMEOUT": "1",
    }
    with HypercornServer(workers=1, env=env, server=request.param, keep_alive=KEEP_ALIVE) as s:
        yield s


def exchange(port: int, data: bytes) -> tuple[bytes, float]:
    """Send ``data`` on a new connection and read until the server closes it.

    Returns what was read and the seconds it took. A reset after an answer
    counts as closed (a server that hangs up with unread bytes resets); a
    connection still open after :data:`PATIENCE` seconds fails the test.
    """
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        try:
            if data:
                sock.sendall(data)
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
        except TimeoutError:
            pytest.fail(f"the connection stayed open; read so far: {received[:200]!r}")
    return received, time.monotonic() - started


def statuses(received: bytes) -> list[int]:
    """The status of every answer in ``received``, in order."""
    return [int(code) for code in _STATUS.findall(received)]


def body_of(received: bytes) -> Any:
    """The JSON body of the one answer in ``received``."""
    return json.loads(received.partition(b"\r\n\r\n")[2])


@pytest.mark.slow
def test_both_length_headers_get_one_answer_and_nothing_after_is_read(
    server: HypercornServer,
) -> None:
    """A request with Content-Length and Transfer-Encoding, then a pipelined PUT: one answer
    (hypercorn: a JSON 400), the connection closes, and the pipelined PUT never runs."""
    smuggled = b"PUT /cache/smuggled HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    smuggled += b"Content-Length: 1\r\n\r\n1"
    ambiguous = (
        b"PUT /cache/framing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1]\r\n0\r\n\r\n"
    )
    received, _ = exchange(server.port, ambiguous + smuggled)
    (status,) = statuses(received)
    head = received.partition(b"\r\n\r\n")[0].lower()
    assert b"\r\nconnection: close" in head, received
    if server.server == "hypercorn":
        assert status == 400
        assert body_of(received)["error"] == "ambiguous_length"
    else:
        # hyper drops Content-Length before the app sees the request, reads the
        # body by Transfer-Encoding alone and closes, as RFC 9112 §6.1 allows.
        assert status == 204
    assert httpx.get(f"{server.url}/cache/smuggled").status_code == 404


@pytest.mark.slow
@pytest.mark.parametrize(("size", "status"), [(15_000, 200), (30_000, 431), (70_000, 431)])
def test_the_head_limit_is_16_kib_on_both_servers(
    server: HypercornServer, size: int, status: int
) -> None:
    """A 15 KB header is served; a 30 KB or 70 KB one, sent at once, gets 431 and a closed
    connection (hypercorn alone used to take up to 64 KiB)."""
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    if status == 200:
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/health", headers={"X-Big": "a" * size}).status_code == 200
        return
    received, _ = exchange(server.port, request)
    assert statuses(received) == [431], received[:200]


@pytest.mark.slow
@pytest.mark.parametrize(("fields", "status"), [(MAX_HEADERS, 200), (MAX_HEADERS + 1, 431)])
def test_at_most_100_header_fields_on_both_servers(
    server: HypercornServer, fields: int, status: int
) -> None:
    """A request with 100 header fields is served; with 101 it gets 431 and a closed connection
    (hypercorn alone took any number)."""
    extra = b"".join(b"X-F%d: a\r\n" % n for n in range(fields - 2))  # besides Host, Connection
    received, _ = exchange(
        server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n"
    )
    assert statuses(received) == [status], received[:200]


@pytest.mark.slow
@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n"],
    ids=["idle", "unfinished head"],
)
def test_an_idle_connection_or_unfinished_head_is_closed_at_the_keep_alive_timeout(
    server: HypercornServer, sent: bytes
) -> None:
    """A connection that sends nothing, or half a head, is closed without an answer once the
    keep-alive timeout (2 s) has passed, on both servers."""
    received, took = exchange(server.port, sent)
    assert received == b""
    assert took >= KEEP_ALIVE * 0.75  # closed by the timeout, not at once


@pytest.mark.slow
def test_a_stalled_body_gets_408(server: HypercornServer) -> None:
    """A body that stops arriving gets a 408 once the body timeout (1 s) has passed."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE) as sock:
        sock.sendall(
            b"PUT /cache/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n[1,"
        )
        answer = sock.recv(256)
    assert statuses(answer) == [408], answer


async def _answer(app: FramingGuard, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """What the guard sends for a GET with ``headers``."""
    sent: list[dict[str, Any]] = []

    async def receive() -> Any:
        raise AssertionError("a refused request's body is never read")

    async def send(message: Any) -> None:
        sent.append(message)

    scope: Any = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "raw_path": b"/x",
        "query_string": b"",
        "headers": headers,
    }
    await app(scope, receive, send)
    return sent


async def test_the_guard_refuses_without_reading_the_body_and_asks_to_close() -> None:
    """Both length headers get a JSON 400, a head over either limit a JSON 431, each with
    Connection: close and without the body being read; the app never sees them."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a refused request reached the app")

    guarded = FramingGuard(app)
    both = [(b"content-length", b"4"), (b"transfer-encoding", b"chunked")]
    big = [(b"x-big", b"a" * MAX_HEAD)]
    many = [(b"x-f", b"a")] * (MAX_HEADERS + 1)
    for headers, status, code in (
        (both, 400, b"ambiguous_length"),
        (big, 431, b"headers_too_large"),
        (many, 431, b"too_many_headers"),
    ):
        start, body = await _answer(guarded, headers)
        assert start["status"] == status
        assert (b"connection", b"close") in start["headers"]
        assert code in body["body"]


def test_head_size_is_the_size_on_the_wire() -> None:
    """The guard's measure of a head is within a few bytes of the head as sent."""
    headers = [(b"host", b"example.test"), (b"x-big", b"a" * 1000)]
    wire = b"GET /p?q=1 HTTP/1.1\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    wire += b"\r\n"
    scope: Any = {
        "type": "http",
        "method": "GET",
        "path": "/p",
        "raw_path": b"/p",
        "query_string": b"q=1",
        "headers": headers,
    }
    assert abs(head_size(scope) - len(wire)) <= 2


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("qapp.asgi:app", "qapp.asgi:__import__('qapp.server.framing', fromlist=['guard'])"),
        ("qapp.asgi", "qapp.asgi:__import__('qapp.server.framing', fromlist=['guard'])"),
        ("m:create_app()", "m:__import__('qapp.server.framing', fromlist=['guard'])"),
        ("asgi:m:app", "asgi:m:__import__('qapp.server.framing', fromlist=['guard'])"),
        ("wsgi:m:app", "wsgi:m:app"),
    ],
)
def test_hypercorn_serves_the_named_app_behind_the_guard(path: str, expected: str) -> None:
    """The app path ``qapp serve`` hands hypercorn wraps the named app (plain or built by a
    factory) in the guard with hypercorn's head limit; a WSGI path is left alone."""
    guarded = guarded_path(path, 1234)
    assert guarded.startswith(expected)
    if guarded != path:
        app = path.rpartition(":")[2] if ":" in path else "app"
        assert guarded.endswith(f".guard({app}, 1234)")


def test_a_wsgi_app_is_not_wrapped() -> None:
    """guard() leaves an app that is not ASGI as it is, for hypercorn to serve as WSGI."""

    def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
        return []

    assert guard(wsgi_app) is wsgi_app


def test_granian_reads_heads_into_hypercorns_limit() -> None:
    """granian's HTTP/1 read buffer is hypercorn's h11_max_incomplete_size."""
    config = Config()
    config.bind = ["127.0.0.1:8000"]
    config.application_path = "qapp.asgi:app"
    assert granian.settings(config)["http1_settings"].max_buffer_size == MAX_HEAD
    config.h11_max_incomplete_size = 32 * 1024
    assert granian.settings(config)["http1_settings"].max_buffer_size == 32 * 1024
