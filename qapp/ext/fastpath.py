"""Quart's per-request machinery, leaner: one task per request instead of three.

:func:`install` gives an app two things (``QAPP_FAST_PATH``, on by default):
:class:`LeanHTTPConnection`, and an ``ensure_async`` that remembers its
answer per function (Quart asks ``inspect.iscoroutinefunction`` about every
hook, view and signal on every request, about eight times a request).

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

A request that announces no body (most GETs, and POSTs without one) has
nothing to read but the news that its client went away, and asking the
server for that news costs more than it is worth on a short request: on
granian the waiting ``receive`` alone was 7 % of a worker's CPU. So such a
request starts its reader only once it has run :data:`WATCH_AFTER`
seconds. The difference is confined to clients that leave within that
time: their request runs to its end (the answer goes nowhere) instead of
being cancelled part way. A request still running then (a lock wait, a
computation) is cancelled as before, at most that much later.

Everything else a route sees is unchanged: the same request object, the
same streaming body, the same cancellation of long requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart import Quart
from quart.asgi import ASGIHTTPConnection, _handle_exception
from quart.utils import encode_headers
from quart.wrappers import Response
from quart.wrappers.response import DataBody

__all__ = ["LeanHTTPConnection", "install"]

#: Functions whose ``ensure_async`` answer is remembered; past this the memory
#: starts again (functions made per request, by ``after_this_request``, would
#: otherwise pile up).
REMEMBERED = 1024

#: Seconds a request without a body runs before its client is watched for
#: going away. Most answers are sent sooner and never pay for the watch.
WATCH_AFTER = 0.02


def _retrieve(task: asyncio.Future[Any]) -> None:
    # A reader cancelled after the answer went out may still end in an
    # error (the server's receive failing on a closed connection): it is
    # seen here, so that asyncio does not log it as never retrieved.
    if not task.cancelled():
        task.exception()


def _announces_no_body(scope: Any) -> bool:
    """True for an HTTP/1 request with neither a ``Content-Length`` above 0 nor chunks.

    Such a request has no body (RFC 9112, 6.3); over HTTP/2 a body needs no
    length header, so there the answer is always False.
    """
    if scope.get("http_version") not in ("1.1", "1.0"):
        return False
    for key, value in scope["headers"]:
        name = key.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return False
    return True


class LeanHTTPConnection(ASGIHTTPConnection):
    """Quart's HTTP connection, running the app in the server's task; see the module doc."""

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self._create_request_from_scope(send)
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
            reader = asyncio.ensure_future(self.handle_messages(request, receive))
            reader.add_done_callback(reader_done)

        watch: asyncio.TimerHandle | None = None
        if _announces_no_body(self.scope):
            # Nothing to read but the client's going away: the body is empty
            # now, and the watch starts only if the answer takes a while.
            request.body.set_complete()
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

    async def handle_request(self, request: Any, send: ASGISendCallable) -> None:
        try:
            response = await self.app.handle_request(request)
        except Exception as error:
            response = await _handle_exception(self.app, error)

        if isinstance(response, Response) and response.timeout != Ellipsis:
            timeout = cast(float | None, response.timeout)
        else:
            timeout = self.app.config["RESPONSE_TIMEOUT"]
        # asyncio.timeout, not wait_for: the same limit without a task.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._send_response(send, response)

    async def _send_response(self, send: ASGISendCallable, response: Any) -> None:
        body = getattr(response, "response", None)
        if not isinstance(response, Response) or type(body) is not DataBody:
            await super()._send_response(send, response)
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": encode_headers(response.headers),
            }
        )
        # What Quart sends as the body and then an empty last message, in one.
        await send(
            {
                "type": "http.response.body",
                "body": body.data[body.begin : body.end],
                "more_body": False,
            }
        )


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
