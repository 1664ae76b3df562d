"""What the good-citizen tests ask of ``tests/citizen_app.py``, and the clients that ask it.

One list of scenarios, each with the answer a correct Quart app gives, run
by three kinds of client that reach the app in different ways:

- :class:`QuartClient`: Quart's own test client (``app.test_client()``),
  which delivers a body without ``Content-Length``, in messages of its own;
- :class:`HttpxClient`: httpx, in process through its ``ASGITransport`` or
  over TCP to a real server;
- for real servers, websockets over a raw socket with wsproto (hypercorn's
  own websocket library) and HTTP that hangs up or stops sending, with h11.

A scenario needs only what its client offers. httpx speaks no websocket and
its ``ASGITransport`` cannot hang up (its receive only ends with the
answer), so those two scenarios run where a client can express them: Quart's
test client and the real servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import h11
import httpx
from quart.typing import TestClientProtocol
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    RejectConnection,
    Request,
    TextMessage,
)

from tests.citizen_app import MAX_UPLOAD

__all__ = [
    "EXPECTED",
    "SCENARIOS",
    "Answer",
    "Client",
    "HttpxClient",
    "QuartTestClient",
    "run_scenarios",
]

#: Seconds any one exchange may take before the test fails rather than hangs.
PATIENCE = 15.0

JSON_PAYLOAD = {"a": 1, "b": [1, 2, 3], "c": {"d": "é"}}
FORM_PAYLOAD = {"name": "ann", "colour": "blue & green"}
RAW_PAYLOAD = bytes(range(256)) * 64
CHUNKS = [b"a" * 1000, b"b" * 20_000, b"c" * 3]
UNDER_LIMIT = 1024 * 1024
OVER_LIMIT = 2 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    """What a client sees of an HTTP answer: the status, the body, the hooks header."""

    status: int
    body: Any
    hooks: str | None = None


def answer_of(status: int, content_type: str, content: bytes, hooks: str | None) -> Answer:
    """An :class:`Answer`: JSON bodies decoded, anything else as text."""
    if content_type.startswith("application/json"):
        return Answer(status, json.loads(content), hooks)
    return Answer(status, content.decode(), hooks)


def digest(data: bytes) -> dict[str, Any]:
    """What the app answers for a body it received whole."""
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class Client(Protocol):
    """What a scenario may ask of a client."""

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        form: dict[str, str] | None = None,
        data: bytes | None = None,
        chunks: list[bytes] | None = None,
    ) -> Answer: ...

    async def oversized(self, path: str, size: int) -> Answer:
        """POST ``size`` bytes (or announce them and send some: a real client may stop)."""
        ...


class WebsocketClient(Client, Protocol):
    async def websocket(self, path: str, message: str) -> list[Any]:
        """Open a websocket with the client's cookies, read one message, send one, read one."""
        ...

    async def leave(self, path: str, started: Callable[[], Awaitable[bool]]) -> None:
        """Send a GET, wait until ``started()`` is true, then hang up."""
        ...


class QuartTestClient:
    """Quart's own test client, on an app whose lifespan the caller runs (``test_app()``)."""

    def __init__(self, client: TestClientProtocol) -> None:
        self.client = client

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        form: dict[str, str] | None = None,
        data: bytes | None = None,
        chunks: list[bytes] | None = None,
    ) -> Answer:
        if chunks is not None:
            async with self.client.request(path, method=method) as connection:
                for chunk in chunks:
                    await connection.send(chunk)
                await connection.send_complete()
            response = await connection.as_response()
        else:
            given = {"json": json, "form": form, "data": data}
            body = {name: value for name, value in given.items() if value is not None}
            response = await self.client.open(path, method=method, **body)
        return answer_of(
            response.status_code,
            response.headers.get("Content-Type", ""),
            await response.get_data(as_text=False),
            response.headers.get("X-Hooks"),
        )

    async def oversized(self, path: str, size: int) -> Answer:
        return await self.send("POST", path, data=b"x" * size)

    async def websocket(self, path: str, message: str) -> list[Any]:
        async with self.client.websocket(path) as socket:
            first = await socket.receive_json()
            await socket.send(message)
            second = await socket.receive()
        return [first, second]

    async def leave(self, path: str, started: Callable[[], Awaitable[bool]]) -> None:
        async with self.client.request(path) as connection:
            # A real client's request is complete before the server hands it on.
            await connection.send_complete()
            await wait_for(started)
            await connection.disconnect()


class HttpxClient:
    """httpx: in process (``ASGITransport``) or over TCP, with its cookie jar."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        form: dict[str, str] | None = None,
        data: bytes | None = None,
        chunks: list[bytes] | None = None,
    ) -> Answer:
        content: bytes | AsyncIterator[bytes] | None = data
        if chunks is not None:

            async def pieces() -> AsyncIterator[bytes]:
                for chunk in chunks:
                    await asyncio.sleep(0)
                    yield chunk

            content = pieces()  # no Content-Length: sent in chunks
        response = await self.client.request(
            method, path, json=json, data=form, content=content, timeout=PATIENCE
        )
        return answer_of(
            response.status_code,
            response.headers.get("Content-Type", ""),
            response.content,
            response.headers.get("X-Hooks"),
        )

    async def oversized(self, path: str, size: int) -> Answer:
        return await self.send("POST", path, data=b"x" * size)


class ServerClient(HttpxClient):
    """httpx over TCP to a real server, plus what httpx cannot do, on raw sockets."""

    def __init__(self, client: httpx.AsyncClient, host: str, port: int) -> None:
        super().__init__(client)
        self.host, self.port = host, port

    def _cookie_header(self) -> list[tuple[bytes, bytes]]:
        cookies = "; ".join(f"{name}={value}" for name, value in self.client.cookies.items())
        return [(b"cookie", cookies.encode())] if cookies else []

    async def oversized(self, path: str, size: int) -> Answer:
        # Announce ``size`` bytes, send a first part, read the answer: a
        # server may answer 413 and hang up before a whole upload is sent,
        # and a client still sending would see a broken pipe, not the 413.
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            http = h11.Connection(h11.CLIENT)
            headers = [("Host", f"{self.host}:{self.port}"), ("Content-Length", str(size))]
            writer.write(http.send(h11.Request(method="POST", target=path, headers=headers)))
            writer.write(http.send(h11.Data(data=b"x" * 65536)))
            await writer.drain()
            async with asyncio.timeout(PATIENCE):
                return await _read_answer(http, reader)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def websocket(self, path: str, message: str) -> list[Any]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        socket = WSConnection(ConnectionType.CLIENT)
        request = Request(
            host=f"{self.host}:{self.port}", target=path, extra_headers=self._cookie_header()
        )
        writer.write(socket.send(request))
        received: list[Any] = []
        text = ""
        try:
            async with asyncio.timeout(PATIENCE):
                while True:
                    data = await reader.read(65536)
                    socket.receive_data(data or None)
                    for event in socket.events():
                        if isinstance(event, RejectConnection):
                            return [f"rejected {event.status_code}"]
                        if isinstance(event, AcceptConnection):
                            continue
                        if isinstance(event, TextMessage):
                            text += event.data
                            if not event.message_finished:
                                continue
                            received.append(json.loads(text) if not received else text)
                            text = ""
                            if len(received) == 1:
                                writer.write(socket.send(TextMessage(data=message)))
                            else:
                                writer.write(socket.send(CloseConnection(code=1000)))
                        elif isinstance(event, CloseConnection):
                            return received
                    await writer.drain()
                    if not data:
                        return received
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def leave(self, path: str, started: Callable[[], Awaitable[bool]]) -> None:
        _, writer = await asyncio.open_connection(self.host, self.port)
        http = h11.Connection(h11.CLIENT)
        headers = [("Host", f"{self.host}:{self.port}")]
        writer.write(http.send(h11.Request(method="GET", target=path, headers=headers)))
        writer.write(http.send(h11.EndOfMessage()))
        await writer.drain()
        try:
            await wait_for(started)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _read_answer(http: h11.Connection, reader: asyncio.StreamReader) -> Answer:
    """Read one HTTP answer off ``reader`` with ``http`` (h11)."""
    status, content_type, body = 0, "", bytearray()
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            content_type = dict(event.headers).get(b"content-type", b"").decode()
        elif isinstance(event, h11.Data):
            body.extend(event.data)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return answer_of(status, content_type, bytes(body), None)


async def wait_for(condition: Callable[[], Awaitable[bool]]) -> None:
    """Return once ``condition()`` is true; fail after :data:`PATIENCE` seconds."""
    async with asyncio.timeout(PATIENCE):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.01)


# -- the scenarios ---------------------------------------------------------------------


async def json_body(client: Client) -> Any:
    return await client.send("POST", "/json", json=JSON_PAYLOAD)


async def form_body(client: Client) -> Any:
    return await client.send("POST", "/form", form=FORM_PAYLOAD)


async def raw_body(client: Client) -> Any:
    return await client.send("POST", "/raw", data=RAW_PAYLOAD)


async def empty_body(client: Client) -> Any:
    return await client.send("POST", "/raw")


async def streamed_body(client: Client) -> Any:
    return await client.send("POST", "/stream-in", chunks=CHUNKS)


async def streamed_answer(client: Client) -> Any:
    return await client.send("GET", "/stream-out")


async def cookies(client: Client) -> Any:
    return [await client.send("GET", "/cookie/set"), await client.send("GET", "/cookie")]


async def session_across_requests(client: Client) -> Any:
    return [
        await client.send("GET", "/session"),
        await client.send("POST", "/session", json={"colour": "teal"}),
        await client.send("GET", "/session"),
        await client.send("GET", "/me"),
        await client.send("POST", "/login", json={"name": "ann"}),
        await client.send("GET", "/me"),
        await client.send("GET", "/session"),
    ]


async def own_404(client: Client) -> Any:
    return await client.send("GET", "/no/such/page")


async def own_418(client: Client) -> Any:
    return await client.send("GET", "/teapot")


async def upload_under_limit(client: Client) -> Any:
    return await client.send("POST", "/upload", data=b"u" * UNDER_LIMIT)


async def upload_over_limit(client: Client) -> Any:
    answer = await client.oversized("/upload", OVER_LIMIT)
    # The page is Quart's (werkzeug's) own: the same words wherever it comes from.
    return (answer.status, "Request Entity Too Large" in str(answer.body))


async def background_task(client: Client) -> Any:
    token = secrets.token_hex(8)
    queued = await client.send("POST", f"/background/{token}")
    return [
        queued == Answer(200, {"queued": token}),
        await client.send("GET", f"/background/{token}"),
    ]


async def hook_order(client: Client) -> Any:
    return await client.send("GET", "/hooks")


async def websocket_sees_session_and_user(client: WebsocketClient) -> Any:
    await client.send("POST", "/session", json={"colour": "plum"})
    await client.send("POST", "/login", json={"name": "bob"})
    return await client.websocket("/ws", "hi")


async def cancelled_when_client_leaves(client: WebsocketClient) -> Any:
    token = secrets.token_hex(8)

    async def state() -> str | None:
        found: str | None = (await client.send("GET", f"/slow/{token}/state")).body["state"]
        return found

    async def started() -> bool:
        return await state() == "started"

    async def ended() -> bool:
        return await state() != "started"

    await client.leave(f"/slow/{token}", started)
    await wait_for(ended)
    return await state()


Scenario = Callable[[Any], Awaitable[Any]]

#: Scenarios any client can run: name -> (scenario, the answer a correct Quart app gives).
SCENARIOS: dict[str, Scenario] = {
    "json body": json_body,
    "form body": form_body,
    "raw body": raw_body,
    "empty body": empty_body,
    "streamed body": streamed_body,
    "streamed answer": streamed_answer,
    "cookies": cookies,
    "session across requests": session_across_requests,
    "own 404": own_404,
    "own 418": own_418,
    "1 MiB upload": upload_under_limit,
    "2 MiB upload": upload_over_limit,
    "background task": background_task,
    "hook order": hook_order,
}

#: Scenarios that need a websocket or a hang-up: Quart's test client and real servers.
WEBSOCKET_SCENARIOS: dict[str, Scenario] = {
    "websocket sees session and user": websocket_sees_session_and_user,
    "cancelled when the client leaves": cancelled_when_client_leaves,
}

_ok = {"ok": True}

#: What a correct Quart app answers to each scenario.
EXPECTED: dict[str, Any] = {
    "json body": Answer(200, {"got": JSON_PAYLOAD}),
    "form body": Answer(200, {"got": FORM_PAYLOAD}),
    "raw body": Answer(200, digest(RAW_PAYLOAD)),
    "empty body": Answer(200, digest(b"")),
    "streamed body": Answer(200, digest(b"".join(CHUNKS))),
    "streamed answer": Answer(200, "line 0\nline 1\nline 2\n"),
    "cookies": [Answer(200, "set"), Answer(200, {"flavour": "oat"})],
    "session across requests": [
        Answer(200, {"colour": None}),
        Answer(200, _ok),
        Answer(200, {"colour": "teal"}),
        Answer(200, {"user": None}),
        Answer(200, {"user": "ann"}),
        Answer(200, {"user": "ann"}),
        Answer(200, {"colour": "teal"}),
    ],
    "own 404": Answer(404, {"error": "no such page"}),
    "own 418": Answer(418, {"error": "I'm a teapot"}),
    "1 MiB upload": Answer(200, digest(b"u" * UNDER_LIMIT)),
    "2 MiB upload": (413, True),
    "background task": [True, Answer(200, {"ran": True})],
    "hook order": Answer(200, {"view": True}, "before-1,before-2,view,after-2,after-1"),
    "websocket sees session and user": [{"colour": "plum", "user": "bob"}, "echo hi"],
    "cancelled when the client leaves": "cancelled",
}

assert UNDER_LIMIT < MAX_UPLOAD < OVER_LIMIT


async def run_scenarios(client: Any, names: dict[str, Scenario]) -> dict[str, Any]:
    """Run each scenario in turn with ``client``; name -> what it saw."""
    seen: dict[str, Any] = {}
    for name, scenario in names.items():
        async with asyncio.timeout(PATIENCE * 2):
            seen[name] = await scenario(client)
    return seen
