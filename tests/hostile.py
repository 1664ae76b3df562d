"""Test helpers for hostile input: a raw ASGI client and an oracle of what is valid.

httpx cleans up what it sends (it normalises paths, encodes odd characters,
fixes ``Content-Length``), so hostile requests go to the app through
:func:`call`, which hands it exactly the ASGI scope a server would build:
the path percent-decoded from the raw request target the way hypercorn
decodes it (``unquote`` of the ASCII target), headers as given, the body in
the chunks given.

The oracle (:func:`key_ok`, :func:`strict_json_ok`, :func:`credentials_ok`,
:func:`is_json_type`) restates the HTTP API's limits in code of its own rather
than importing the app's: a test that asked the app what is valid would
prove nothing.
"""

from __future__ import annotations

import asyncio
import json
import math
import string
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from quart import Quart

#: The API: a cache or memo key is 1 to 200 of these characters.
KEY_CHARS = frozenset(string.ascii_letters + string.digits + "._:-")
#: The API: a request body is at most 64 KiB.
MAX_BODY = 64 * 1024
#: The deepest JSON nesting qapp accepts (qapp.service.validation.MAX_DEPTH, restated).
MAX_DEPTH = 100
#: Methods whose body must be declared JSON.
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The counter strategies of the race lab.
STRATEGIES = ("unsafe", "locked", "shared-unsafe", "shared-locked", "atomic")


@dataclass
class Raw:
    """One HTTP request exactly as it would arrive on the wire, already framed."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


@dataclass
class Answer:
    """The app's answer to a :class:`Raw` request."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def json(self) -> Any:
        return json.loads(self.body)


async def call(app: Quart, request: Raw) -> Answer:
    """Send ``request`` to ``app`` through ASGI, as hypercorn would hand it over."""
    raw_path, _, query = request.target.encode("ascii").partition(b"?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"qapp.test"), *request.headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }
    chunks = request.chunks or [b""]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        # A server's receive blocks until the client goes away.
        await never.wait()
        return {"type": "http.disconnect"}

    status = 0
    headers: list[tuple[bytes, bytes]] = []
    body = bytearray()

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)  # type: ignore[arg-type]
    return Answer(status, headers, bytes(body))


def encode_segment(text: str, *, slash: str = "%2F") -> str:
    """Percent-encode ``text`` as one path segment; ``slash`` is how '/' is written."""
    return "".join(slash if c == "/" else quote(c, safe="") for c in text)


def key_ok(key: str) -> bool:
    """The API's key rule: 1 to 200 characters from A-Z a-z 0-9 . _ : -."""
    return 1 <= len(key) <= 200 and all(c in KEY_CHARS for c in key)


def is_json_type(content_type: str | None) -> bool:
    """Whether a Content-Type declares JSON: application/json or application/*+json."""
    if content_type is None:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


def _depth_and_text_ok(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in item):
                return False
        elif isinstance(item, list | dict):
            if depth > MAX_DEPTH:
                return False
            children = list(item.items()) if isinstance(item, dict) else [(None, c) for c in item]
            for key, child in children:
                if key is not None:
                    stack.append((key, depth))
                stack.append((child, depth + 1))
    return True


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def strict_json_ok(body: bytes) -> bool:
    """RFC 8259 JSON in UTF-8 that a store can keep: no NaN/±Infinity, no float
    overflow, no integer over Python's 4300 digits, no lone surrogate, nested
    at most ``MAX_DEPTH`` deep."""
    try:
        text = body.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError):
        return False
    return _depth_and_text_ok(value)


def credentials_ok(value: Any) -> bool:
    """The API's credentials: exactly a username ``[a-z0-9_]{3,32}`` and a password of 8-128."""
    if not isinstance(value, dict) or set(value) != {"username", "password"}:
        return False
    name, password = value["username"], value["password"]
    if not isinstance(name, str) or not isinstance(password, str):
        return False
    name_ok = 3 <= len(name) <= 32 and all(
        c in "abcdefghijklmnopqrstuvwxyz0123456789_" for c in name
    )
    return name_ok and 8 <= len(password) <= 128
