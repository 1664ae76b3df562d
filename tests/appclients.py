"""One way to send a request through an app in process, by Quart's test client or by httpx.

Each test of the cross-site check and of the client address runs through
both: Quart's ``app.test_client()`` and httpx's ``ASGITransport``, each
with the peer address it is given and no cookie jar (a test sends the
cookies it means to send).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httpx
from quart import Quart
from quart.testing import QuartClient
from werkzeug.datastructures import Headers

__all__ = ["CLIENT_KINDS", "Answer", "Send", "sender", "session_cookie"]

#: The two in-process clients.
CLIENT_KINDS = ["quart", "httpx"]

#: The Host every in-process request names, unless it sends its own.
HOST = "app.example"


@dataclass
class Answer:
    """What the app answered: status, body and headers."""

    status: int
    body: bytes
    headers: Headers

    @property
    def json(self) -> Any:
        """The body as JSON; None if it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def text(self) -> str:
        """The body as UTF-8 text."""
        return self.body.decode()


class Send(Protocol):
    """Send ``method path`` with ``headers`` (repeats allowed) from ``peer``."""

    async def __call__(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]] = (),
        peer: str = "127.0.0.1",
    ) -> Answer: ...


def sender(app: Quart, kind: str) -> Send:
    """A :class:`Send` through ``app`` by Quart's test client (``quart``) or httpx (``httpx``)."""
    if kind == "quart":
        # The app's own test client; its protocol type lacks open()'s defaults.
        client = cast(QuartClient, app.test_client(use_cookies=False))

        async def by_quart(
            method: str,
            path: str,
            headers: Sequence[tuple[str, str]] = (),
            peer: str = "127.0.0.1",
        ) -> Answer:
            sent = Headers(list(headers))
            sent.setdefault("Host", HOST)
            response = await client.open(
                path, method=method, headers=sent, scope_base={"client": (peer, 40000)}
            )
            body = await response.get_data(as_text=False)
            assert isinstance(body, bytes)
            return Answer(response.status_code, body, Headers(list(response.headers.items())))

        return by_quart

    async def by_httpx(
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]] = (),
        peer: str = "127.0.0.1",
    ) -> Answer:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as client:
            # Latin-1, as a server decodes header bytes: httpx would encode str as ASCII.
            sent = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
            response = await client.request(method, path, headers=sent)
        answered = Headers(list(response.headers.multi_items()))
        return Answer(response.status_code, response.content, answered)

    return by_httpx


def session_cookie(answer: Answer, name: str = "session") -> tuple[str, str]:
    """The ``Cookie`` header that sends back the session cookie ``answer`` set."""
    for value in answer.headers.getlist("Set-Cookie"):
        pair = value.split(";", 1)[0]
        if pair.startswith(f"{name}="):
            return ("Cookie", pair)
    raise AssertionError(f"no {name} cookie in {answer.headers}")
