"""Quart's per-request machinery, leaner: one task per request instead of three.

Off unless asked for: ``QAPP_FAST_PATH`` (config key, else environment
variable) is False by default, so ``Qapp(app)`` leaves Quart's own request
handling in place. qapp's demo service turns it on (``create_app``, and so
``qapp.asgi:app``); ``QAPP_FAST_PATH=0`` turns it off there too.

:func:`install` gives an app two things: :class:`LeanHTTPConnection` as its
``asgi_http_class``, and an ``ensure_async`` that remembers its answer per
function (Quart asks ``inspect.iscoroutinefunction`` about every hook, view
and signal on every request, about eight times a request). Both are public
attributes of a Quart app, made to be replaced; no private Quart name is
used.

For every HTTP request Quart's own connection class starts three tasks:
one reads the request's messages (the body, then a disconnect), one runs
the app, and ``asyncio.wait_for`` wraps the sending of the answer in a third;
an ``asyncio.wait`` picks the first of the two to finish and cancels the
other. On a route that does one store call, that bookkeeping cost about as
much CPU as the route itself, and on granian, whose HTTP side is Rust, it
was the largest single Python cost of a request.

:class:`LeanHTTPConnection` does the same work with at most one extra
task: the app runs in the task the server started for the request, and a
reader task cancels it if the client goes away (or if reading fails),
exactly as Quart's ``asyncio.wait`` would. The answer is sent under
``asyncio.timeout`` (no task) with the same ``RESPONSE_TIMEOUT``, and a
body already complete in memory goes out in one message rather than two.

Messages are read in the order Quart's ``handle_messages`` reads them, and
each is handled as it handles it: the reader *is* that method, inherited.
What changes is when it starts. A request that announces a body (a
``Content-Length`` above 0, chunks, or any HTTP/2 request) starts it at
once, as Quart does. A request that announces none (an HTTP/1 request
with neither header: most GETs, and POSTs without a body) starts it only
when needed:

- when the app first reads the body (``await request.get_data()``,
  ``request.form``, ``async for chunk in request.body``...): the request's
  body is of a subclass of its usual class that starts the reader when it
  is first awaited or iterated. From a real
  server the first message is then the empty, complete body; Quart's test
  client, which sends no ``Content-Length``, delivers its body there;
- else once the request has run :data:`WATCH_AFTER` seconds, to hear if
  its client went away. Asking the server for that news costs more than it
  is worth on a short request: on granian a ``receive`` is a round trip
  through its Rust runtime, and the waiting one alone was 7 % of a
  worker's CPU (reading the first message inline on every such request
  cost 15–20 % more CPU per request on the cheapest routes). The delay
  is a second, not a few milliseconds, because a loaded server answers
  late: at a thousand connections most answers take a few hundred
  milliseconds, and a short delay started the watch (a task and a
  ``receive``) for nearly every request exactly when CPU was scarcest.
  The difference is confined to clients that leave within that time:
  their request runs to its end (the answer goes nowhere) instead of
  being cancelled part way. A request still running then (a lock wait,
  a long poll, a computation) is cancelled as before, at most that much
  later.

A request whose body nobody read has it marked complete once answered,
so that code reading it later (a background task with a copy of the
request context) gets the empty body a server sends, rather than waiting
out ``BODY_TIMEOUT``. (Under Quart's test client, whose bodies come
without ``Content-Length``, such a late reader gets that empty body too,
where Quart's own reader would have read the test's body meanwhile.)

Everything else a route sees is unchanged: the same request class, the
same streaming body, the same ``MAX_CONTENT_LENGTH`` and ``BODY_TIMEOUT``,
the same cancellation of long requests. Websockets and the lifespan are
Quart's own.

What Quart would need to make the fast path unnecessary
-------------------------------------------------------

- A way to run the app in the server's task: Quart's connection class
  always starts a reader task and a handler task and waits on both. A
  public switch (or a documented hook between "request built" and "answer
  sent") would let the app run where the server already runs it.
- A cheaper disconnect watch: a reader that reads the body and then
  waits for ``http.disconnect`` is a task and a pending ``receive`` per
  request, for news that matters only to long requests. Reading the body
  when the app asks for it, and starting the watch after a short delay
  (or only for routes that want it), would do. Servers that follow ASGI
  2.4 also raise ``OSError`` from ``send`` on a closed connection, which
  tells a streaming answer that its client left with no watch at all.
- Sending the answer without ``asyncio.wait_for``: ``asyncio.timeout``
  bounds it the same way without a task.
- ``ensure_async`` remembering its answer per function, as this module's
  does: the answer about a function never changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial
from typing import Any, cast
from urllib.parse import urlparse

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart import Quart
from quart.asgi import ASGIHTTPConnection
from quart.debug import traceback_response
from quart.utils import encode_headers
from quart.wrappers import Request, Response
from quart.wrappers.response import DataBody
from werkzeug.datastructures import Headers
from werkzeug.wrappers import Response as WerkzeugResponse

__all__ = ["LeanHTTPConnection", "install"]

#: Functions whose ``ensure_async`` answer is remembered; past this the memory
#: starts again (functions made per request, by ``after_this_request``, would
#: otherwise pile up).
REMEMBERED = 1024

#: Seconds a request without a body runs before its client is watched for
#: going away. Most answers are sent sooner and never pay for the watch, even
#: on a server loaded with a thousand connections.
WATCH_AFTER = 1.0


def _retrieve(task: asyncio.Future[Any]) -> None:
    # A reader cancelled after the answer went out may still end in an
    # error (the server's receive failing on a closed connection): it is
    # seen here, so that asyncio does not log it as never retrieved.
    if not task.cancelled():
        task.exception()


def _announces_no_body(scope: Any) -> bool:
    """True for an HTTP/1 request with neither a ``Content-Length`` above 0 nor chunks.

    A server delivers no body for such a request (RFC 9112, 6.3), though
    Quart's test client may; over HTTP/2 a body needs no length header, so
    there the answer is always False.
    """
    if scope.get("http_version") not in ("1.1", "1.0"):
        return False
    for key, value in scope["headers"]:
        name = key.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return False
    return True


#: Body class -> its on-demand subclass, made once per class (usually only Quart's ``Body``).
_ON_DEMAND: dict[type[Any], Any] = {}


def _on_demand(body_class: type[Any]) -> Any:
    """``body_class``, starting the connection's reader when the app first reads the body."""
    known = _ON_DEMAND.get(body_class)
    if known is not None:
        return known

    class OnDemandBody(body_class):  # type: ignore[misc]
        """A request body whose messages are asked for only once someone reads it."""

        #: Starts the reader; set per request.
        start: Callable[[], None]

        def __await__(self) -> Any:
            self.start()
            return super().__await__()

        def __anext__(self) -> Any:
            self.start()
            return super().__anext__()

    OnDemandBody.__qualname__ = OnDemandBody.__name__ = f"OnDemand{body_class.__name__}"
    _ON_DEMAND[body_class] = OnDemandBody
    return OnDemandBody


def _normalise_path(path: str, root_path: str) -> str:
    # A path outside the app's root is a 404: " " matches no route.
    if path == root_path or not path.startswith(root_path):
        return " "
    return path.removeprefix(root_path)


class LeanHTTPConnection(ASGIHTTPConnection):
    """Quart's HTTP connection, running the app in the server's task; see the module doc."""

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self.make_request(send)
        task = asyncio.current_task()
        assert task is not None
        state = {"answering": True, "cut": False}
        reader: asyncio.Future[None] | None = None

        def reader_done(_: asyncio.Future[None]) -> None:
            # The client went away (or reading failed) while the app runs:
            # stop the app, as Quart's asyncio.wait(FIRST_COMPLETED) does.
            if state["answering"]:
                state["cut"] = True
                task.cancel()

        def start_reading() -> None:
            nonlocal reader
            if reader is None and state["answering"]:
                reader = asyncio.ensure_future(self.handle_messages(request, receive))
                reader.add_done_callback(reader_done)

        watch: asyncio.TimerHandle | None = None
        if _announces_no_body(self.scope):
            # Read only when asked: the body when the app first reads it, the
            # client's going away once the answer takes a while.
            limit = self.app.config["MAX_CONTENT_LENGTH"]
            kind: type[Any] = type(request.body)
            body = _on_demand(kind)(request.content_length, limit)
            body.start = start_reading
            request.body = body
            watch = asyncio.get_running_loop().call_later(WATCH_AFTER, start_reading)
        else:
            start_reading()
        try:
            # One turn of the loop first, as Quart's own tasks take: a caller
            # in this process (a test client) gets to send its other
            # requests before this one is answered, as it would to a server.
            await asyncio.sleep(0)
            await self.handle_request(request, send)
        except asyncio.CancelledError:
            # Swallowed only if the reader alone cancelled the app; a cancel
            # from the server (or anyone else) still propagates.
            if not state["cut"] or task.cancelling() > 1:
                raise
        finally:
            state["answering"] = False
            if watch is not None:
                watch.cancel()
            if reader is None:
                # Never read: the body a server sends for such a request is
                # empty, and code that reads it later must not wait for it.
                request.body.set_complete()
            if state["cut"]:
                task.uncancel()
            if reader is not None:
                reader.remove_done_callback(reader_done)
                if not reader.done():
                    reader.cancel()
                    reader.add_done_callback(_retrieve)
        if reader is not None and reader.done() and not reader.cancelled():
            error = reader.exception()
            if error is not None:
                raise error

    def make_request(self, send: ASGISendCallable) -> Request:
        """This connection's request, built from its scope as Quart's own connection builds it."""
        scope = self.scope
        config = self.app.config
        headers = Headers()
        headers["Remote-Addr"] = (scope.get("client") or ["<local>"])[0]
        for name, value in scope["headers"]:
            headers.add(name.decode("latin1").title(), value.decode("latin1"))
        if scope["http_version"] < "1.1":
            headers.setdefault("Host", config["SERVER_NAME"] or "")
        path = scope["path"]
        path = path if path[0] == "/" else urlparse(path).path
        root_path = scope.get("root_path", "")
        if root_path != "":
            path = _normalise_path(path, root_path)
        return self.app.request_class(
            scope["method"],
            scope["scheme"],
            path,
            scope["query_string"],
            headers,
            root_path,
            scope["http_version"],
            max_content_length=config["MAX_CONTENT_LENGTH"],
            body_timeout=config["BODY_TIMEOUT"],
            send_push_promise=partial(self.push_promise, send),
            scope=scope,
        )

    async def push_promise(self, send: ASGISendCallable, path: str, headers: Headers) -> None:
        """Send an HTTP/2 server push, where the server offers it (``http.response.push``)."""
        extensions = self.scope.get("extensions", {}) or {}
        if "http.response.push" in extensions:
            await send(
                {"type": "http.response.push", "path": path, "headers": encode_headers(headers)}
            )

    async def handle_request(self, request: Request, send: ASGISendCallable) -> None:
        try:
            response: Any = await self.app.handle_request(request)
        except Exception as error:
            # What Quart does with an error its handlers let through: a
            # traceback page in debug or testing mode, else the server's 500.
            if not (self.app.debug or self.app.testing):
                raise
            response = await traceback_response(error)

        if isinstance(response, Response) and response.timeout != Ellipsis:
            timeout = cast(float | None, response.timeout)
        else:
            timeout = self.app.config["RESPONSE_TIMEOUT"]
        # asyncio.timeout, not wait_for: the same limit without a task.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.send_answer(send, response)

    async def send_answer(self, send: ASGISendCallable, response: Any) -> None:
        """Send ``response`` as Quart does; a body already in memory in one message."""
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": encode_headers(response.headers),
            }
        )
        body = getattr(response, "response", None)
        if isinstance(response, Response) and type(body) is DataBody:
            # What Quart sends as the body and then an empty last message, in one.
            await send(
                {
                    "type": "http.response.body",
                    "body": body.data[body.begin : body.end],
                    "more_body": False,
                }
            )
            return
        if isinstance(response, WerkzeugResponse):
            for data in response.response:
                chunk = data.encode() if isinstance(data, str) else data
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        else:
            async with response.response as response_body:
                async for data in response_body:
                    chunk = data.encode() if isinstance(data, str) else data
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _remembering(ensure_async: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``ensure_async`` that asks once per function, not once per call."""
    known: dict[Any, Any] = {}

    def remembered(func: Any) -> Any:
        try:
            return known[func]
        except KeyError:
            if len(known) >= REMEMBERED:
                known.clear()
            answer = known[func] = ensure_async(func)
            return answer
        except TypeError:  # an unhashable callable: ask every time
            return ensure_async(func)

    return remembered


def install(app: Quart) -> None:
    """Serve ``app``'s HTTP requests with :class:`LeanHTTPConnection` and a remembering
    ``ensure_async``."""
    app.asgi_http_class = LeanHTTPConnection
    app.ensure_async = _remembering(app.ensure_async)  # type: ignore[method-assign,assignment]
