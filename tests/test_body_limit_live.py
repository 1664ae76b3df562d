"""The 64 KiB body limit on a real hypercorn server: a 413 before the body is read.

A raw socket announces (or streams in chunks) a body far over the limit,
sends only its first part, then reads. The 413 arriving at that point
proves the server answered without waiting for, or holding, the rest.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from qapp.testing import HypercornServer

pytestmark = pytest.mark.slow

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(one_worker_server: HypercornServer) -> HypercornServer:
    """The module's live server."""
    return one_worker_server


def _read_answer(sock: socket.socket, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 answer with a Content-Length from ``sock``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(status_line.split()[1]), headers, body


def _assert_413(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 413, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["error"] == "request_entity_too_large"
    assert error["message"]


def _server_hangs_up(sock: socket.socket, seconds: float = 5.0) -> int | None:
    """Keep sending body bytes; return how many went out before the server hung up.

    None if it was still taking them after ``seconds``: it would be reading
    (and dropping) an endless body.
    """
    sent = 0
    deadline = time.monotonic() + seconds
    sock.settimeout(1.0)
    try:
        while time.monotonic() < deadline:
            sent += sock.send(b"x" * 65536)
    except (BrokenPipeError, ConnectionResetError):
        return sent
    except TimeoutError:
        pass
    return None


def _assert_413_then_hang_up(sock: socket.socket) -> None:
    """The JSON 413 arrives, then the server hangs up, having taken no more
    than the sockets' buffers hold of the rest of the body."""
    _assert_413(*_read_answer(sock))
    taken = _server_hangs_up(sock)
    assert taken is not None
    assert taken < 64 * 1024 * 1024


def _assert_no_exception_logged(server: HypercornServer) -> None:
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    assert "Exception on request" not in log


def _request_head(method: str, path: str, port: int, *extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *extra, "", ""]
    return "\r\n".join(lines).encode()


def test_announced_huge_body_gets_413_after_its_first_bytes(server: HypercornServer) -> None:
    """Content-Length 1 GiB, 16 KiB sent: the JSON 413 arrives and the server hangs up."""
    announced = 1 << 30
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = _request_head(
            "PUT",
            "/cache/big",
            server.port,
            "Content-Type: application/json",
            f"Content-Length: {announced}",
        )
        sock.sendall(head + b'"' + b"x" * (16 * 1024))
        # It does not drain the announced gigabyte.
        _assert_413_then_hang_up(sock)
    assert httpx.get(f"{server.url}/cache/big").status_code == 404
    _assert_no_exception_logged(server)


def test_endless_chunked_body_gets_413_once_over_the_limit(server: HypercornServer) -> None:
    """A chunked body that never ends gets its 413 once 64 KiB are in, then the server hangs up."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            _request_head(
                "PUT",
                "/cache/stream",
                server.port,
                "Content-Type: application/json",
                "Transfer-Encoding: chunked",
            )
        )
        chunk = b"x" * 8192
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        # 72 KiB: over the limit by one chunk, and never the closing zero-length
        # chunk. No more is sent before the answer is read: the server may hang up
        # as soon as it has answered, and a send after that breaks the pipe.
        for _ in range(LIMIT // len(chunk) + 1):
            sock.sendall(framed)
        _assert_413_then_hang_up(sock)
    assert httpx.get(f"{server.url}/cache/stream").status_code == 404
    _assert_no_exception_logged(server)


def test_body_at_the_limit_is_stored_by_the_live_server(server: HypercornServer) -> None:
    """The limit is exact on the real server too: 64 KiB is stored, one byte more is a 413."""
    body = b'"' + b"x" * (LIMIT - 2) + b'"'
    headers = {"content-type": "application/json"}
    assert httpx.put(f"{server.url}/cache/edge", content=body, headers=headers).status_code == 204
    over = httpx.put(f"{server.url}/cache/over", content=body + b" ", headers=headers)
    _assert_413(over.status_code, dict(over.headers), over.content)
    _assert_no_exception_logged(server)
