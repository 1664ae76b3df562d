"""One message framing on every server: an ambiguous or oversized request head is refused.

``qapp serve`` runs on hypercorn (h11) or on granian (hyper), and the two
parsers disagreed on two requests a client controls:

- A request with both ``Content-Length`` and ``Transfer-Encoding``. Its length
  depends on which header a reader believes, which is how a request is
  smuggled past a proxy that believes the other one. RFC 9112 §6.1 lets a
  server refuse it, and says the connection must be closed after it in any
  case. hyper (granian) reads the chunked body and closes; h11 (hypercorn)
  reads the chunked body and keeps the connection open, so whatever the
  client sent after it is read as a second request.
- A large request head. hyper refuses a head that does not fit its read
  buffer; h11 refuses a head over ``h11_max_incomplete_size`` (16 KiB) only
  while it is incomplete, so a head up to 64 KiB that arrives in one read
  was accepted, and granian's default buffer took 400 KiB. hyper also
  refuses more than 100 header fields, where h11 takes any number.

:class:`FramingGuard` wraps the app each worker serves. It answers the first
request with a JSON 400, and a head over either limit with a JSON 431, both
with ``Connection: close``, without reading the body: the server then
closes the connection, and no byte after the refused request is read as a
request. On granian the guard never sees both length headers (hyper drops
``Content-Length`` before the app is called, and closes the connection
after the answer itself); granian's read buffer is set to the same limit
(:func:`qapp.server.granian.settings`), so it refuses a larger head, or
more fields, itself.
"""

from __future__ import annotations

import json
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope
from hypercorn.utils import is_asgi

__all__ = ["MAX_HEAD", "MAX_HEADERS", "FramingGuard", "guard", "guarded_path", "head_size"]

#: Largest request head (request line and headers) in bytes: hypercorn's
#: ``h11_max_incomplete_size`` default, which ``qapp serve`` applies on both servers.
MAX_HEAD = 16 * 1024
#: Most header fields in a request: hyper's fixed limit, which granian applies.
MAX_HEADERS = 100

#: Bytes of a request line besides its method and target: two spaces, "HTTP/1.1", CRLF.
_LINE_EXTRA = 12
#: Bytes around each header: ": " and CRLF.
_HEADER_EXTRA = 4


def head_size(scope: HTTPScope) -> int:
    """The size of the request's head as it came on the wire, give or take whitespace."""
    # raw_path is optional in ASGI: without it, the decoded path is near enough.
    target = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string") or b""
    size = len(scope["method"]) + len(target) + _LINE_EXTRA
    if query:
        size += 1 + len(query)
    for name, value in scope["headers"]:
        size += len(name) + len(value) + _HEADER_EXTRA
    return size + 2  # the empty line that ends the head


class FramingGuard:
    """ASGI middleware: refuse ambiguous framing (400) and oversized heads (431), then close.

    ``max_head`` (bytes) or ``max_headers`` (fields) None leaves that limit
    to the server (granian enforces both while it reads).
    """

    def __init__(
        self, app: Any, max_head: int | None = MAX_HEAD, max_headers: int | None = MAX_HEADERS
    ) -> None:
        self.app = app
        self.max_head = max_head
        self.max_headers = max_headers

    def refusal(self, scope: HTTPScope) -> tuple[int, str, str] | None:
        """Why this request must be refused (status, code, message), or None."""
        headers = list(scope["headers"])
        names = {name.lower() for name, _ in headers}
        if b"content-length" in names and b"transfer-encoding" in names:
            return (
                400,
                "ambiguous_length",
                "a request may carry Content-Length or Transfer-Encoding, not both",
            )
        if self.max_head is not None and head_size(scope) > self.max_head:
            return (
                431,
                "headers_too_large",
                f"the request line and headers exceed {self.max_head} bytes",
            )
        if self.max_headers is not None and len(headers) > self.max_headers:
            return (
                431,
                "too_many_headers",
                f"a request has at most {self.max_headers} header fields",
            )
        return None

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        refusal = None
        if scope["type"] == "http":
            refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, message = refusal
        body = json.dumps({"error": code, "message": message}).encode()
        # No receive(): the body of a request that is refused for its framing
        # is never read, and "Connection: close" makes both servers hang up
        # once this answer is out.
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
                "trailers": False,
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


def guard(app: Any, max_head: int | None = MAX_HEAD, max_headers: int | None = MAX_HEADERS) -> Any:
    """``app`` behind a :class:`FramingGuard`; a WSGI app is returned as it is."""
    return FramingGuard(app, max_head, max_headers) if is_asgi(app) else app


def guarded_path(application_path: str, max_head: int = MAX_HEAD) -> str:
    """hypercorn's ``application_path`` for the same app behind :func:`guard`.

    hypercorn evaluates what follows the module name (``app``, or a call such
    as ``create_app()``) in the module's namespace, so the guard goes around
    that expression: any app, plain or built by a factory, is guarded. The
    expression imports this module by name, which leaves the app's module as
    it is. A path in ``wsgi:`` mode is left alone.
    """
    parts = application_path.split(":")
    if len(parts) == 1:
        parts.append("app")
    if len(parts) == 3 and parts[0] == "wsgi":
        return application_path
    *prefix, expression = parts
    wrapped = f"__import__({__name__!r}, fromlist=['guard']).guard({expression}, {max_head})"
    return ":".join([*prefix, wrapped])
