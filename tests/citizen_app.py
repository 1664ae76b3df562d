"""An ordinary Quart app, built with or without qapp, to prove that ``Qapp(app)`` breaks nothing.

It uses what a Quart app uses: JSON, form, raw and streamed request bodies,
cookies, ``session`` across requests, ``g.user``, a websocket that reads
both, a streamed answer, its own error handlers, ``MAX_CONTENT_LENGTH``, a
background task, request hooks, and a route that notices when its client
leaves. :func:`make_app` builds it three ways: plain Quart (the control),
with ``Qapp(app)`` and the fast path off (the library's default), and with
the fast path on (as qapp's service runs). The tests in
``tests/test_good_citizen.py`` expect the same answers from all three.

With qapp, the session lives in the store and ``g.user`` comes from
``@qapp.user_loader``; without it, the session is Quart's signed cookie and
a hook of the app's own fills ``g.user``. Those are the only differences.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

from quart import Quart, Response, abort, g, request, session, websocket

from qapp import Qapp

__all__ = ["MAX_UPLOAD", "STATE", "from_environment", "make_app"]

#: The app's MAX_CONTENT_LENGTH: 1.5 MiB, so that 1 MiB passes and 2 MiB is a 413.
MAX_UPLOAD = 3 * 512 * 1024

#: Where the app keeps what its background tasks and slow routes did: per app.
STATE = "citizen"

#: Seconds the slow route works unless its client leaves first.
SLOW_WORK = 30.0

#: Seconds a route that reports on a background task waits for it.
REPORT_WAIT = 5.0

#: A fixed test key (≥ 32 bytes): every worker and every test signs alike.
SECRET = "citizen-app-secret-for-tests-only-0123456789"


def _digest(data: bytes) -> dict[str, Any]:
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def make_app(with_qapp: bool, fast_path: bool, store_url: str | None) -> Quart:
    """The citizen app: plain Quart, or with ``Qapp(app)`` on ``store_url``, fast path or not."""
    if fast_path and not with_qapp:
        raise ValueError("the fast path is qapp's: with_qapp=False has none")
    app = Quart(__name__)
    app.secret_key = SECRET
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD
    app.extensions[STATE] = {"background": {}, "slow": {}}
    qapp: Qapp | None = None
    if with_qapp:
        app.config["QAPP_STORE_URL"] = store_url
        app.config["QAPP_FAST_PATH"] = fast_path
        qapp = Qapp(app)

        @qapp.user_loader
        async def load_user(user_id: str) -> str:
            return user_id

    else:

        @app.before_websocket
        @app.before_request
        async def load_user_from_cookie() -> None:
            g.user = session.get("user")

    def state() -> dict[str, Any]:
        found: dict[str, Any] = app.extensions[STATE]
        return found

    # -- hooks: their order is part of every answer of /hooks -------------------

    @app.before_request
    async def before_one() -> None:
        g.hooks = ["before-1"]

    @app.before_request
    async def before_two() -> None:
        g.hooks.append("before-2")

    @app.after_request
    async def after_one(response: Response) -> Response:
        # Registered first, so Quart runs it last.
        g.hooks.append("after-1")
        if request.path == "/hooks":
            response.headers["X-Hooks"] = ",".join(g.hooks)
        return response

    @app.after_request
    async def after_two(response: Response) -> Response:
        g.hooks.append("after-2")
        return response

    @app.get("/")
    async def index() -> str:
        return "hello"

    @app.get("/hooks")
    async def hooks() -> dict[str, Any]:
        g.hooks.append("view")
        return {"view": True}

    # -- request bodies -------------------------------------------------------------

    @app.post("/json")
    async def echo_json() -> dict[str, Any]:
        return {"got": await request.get_json()}

    @app.post("/form")
    async def echo_form() -> dict[str, Any]:
        form = await request.form
        return {"got": form.to_dict()}

    @app.post("/raw")
    async def raw() -> dict[str, Any]:
        return _digest(await request.get_data(cache=True, as_text=False, parse_form_data=False))

    @app.post("/stream-in")
    async def stream_in() -> dict[str, Any]:
        received = bytearray()
        async for chunk in request.body:
            received.extend(chunk)
        return _digest(bytes(received))

    @app.post("/upload")
    async def upload() -> dict[str, Any]:
        return _digest(await request.get_data(cache=True, as_text=False, parse_form_data=False))

    # -- a streamed answer --------------------------------------------------------

    @app.get("/stream-out")
    async def stream_out() -> tuple[AsyncIterator[bytes], int, dict[str, str]]:
        async def lines() -> AsyncIterator[bytes]:
            for number in range(3):
                await asyncio.sleep(0)
                yield f"line {number}\n".encode()

        return lines(), 200, {"Content-Type": "text/plain"}

    # -- cookies, the session and the user -----------------------------------------

    @app.get("/cookie/set")
    async def set_cookie() -> Response:
        response = Response("set")
        response.set_cookie("flavour", "oat")
        return response

    @app.get("/cookie")
    async def read_cookie() -> dict[str, Any]:
        return {"flavour": request.cookies.get("flavour")}

    @app.post("/session")
    async def write_session() -> dict[str, Any]:
        body = await request.get_json()
        session["colour"] = body["colour"]
        return {"ok": True}

    @app.get("/session")
    async def read_session() -> dict[str, Any]:
        return {"colour": session.get("colour")}

    @app.post("/login")
    async def login() -> dict[str, Any]:
        name = (await request.get_json())["name"]
        if qapp is not None:
            await qapp.login_user(name)
        else:
            session["user"] = name
        return {"user": name}

    @app.get("/me")
    async def me() -> dict[str, Any]:
        return {"user": g.user}

    @app.websocket("/ws")
    async def chat() -> None:
        await websocket.accept()
        await websocket.send_json({"colour": session.get("colour"), "user": g.get("user")})
        message = await websocket.receive()
        await websocket.send(f"echo {message!s}")

    # -- errors of the app's own -------------------------------------------------------

    @app.errorhandler(404)
    async def not_found(_: Exception) -> tuple[dict[str, str], int]:
        return {"error": "no such page"}, 404

    @app.errorhandler(418)
    async def teapot(_: Exception) -> tuple[dict[str, str], int]:
        return {"error": "I'm a teapot"}, 418

    @app.get("/teapot")
    async def brew() -> dict[str, str]:
        abort(418)

    # -- a background task --------------------------------------------------------

    def ran(token: str) -> asyncio.Event:
        events: dict[str, asyncio.Event] = state()["background"]
        return events.setdefault(token, asyncio.Event())

    async def record(token: str) -> None:
        await asyncio.sleep(0.01)
        ran(token).set()

    @app.post("/background/<token>")
    async def queue(token: str) -> dict[str, Any]:
        app.add_background_task(record, token)
        return {"queued": token}

    @app.get("/background/<token>")
    async def report(token: str) -> dict[str, Any]:
        async with asyncio.timeout(REPORT_WAIT):
            await ran(token).wait()
        return {"ran": True}

    # -- a route that notices its client leaving ---------------------------------------

    @app.get("/slow/<token>")
    async def slow(token: str) -> dict[str, Any]:
        state()["slow"][token] = "started"
        try:
            await asyncio.sleep(SLOW_WORK)
        except asyncio.CancelledError:
            state()["slow"][token] = "cancelled"
            raise
        state()["slow"][token] = "finished"
        return {"finished": True}

    @app.get("/slow/<token>/state")
    async def slow_state(token: str) -> dict[str, Any]:
        return {"state": state()["slow"].get(token)}

    return app


def from_environment() -> Quart:
    """The app a server imports, built as ``CITIZEN_QAPP`` and ``CITIZEN_FAST_PATH`` (0 or 1)
    and ``CITIZEN_STORE_URL`` say."""
    return make_app(
        with_qapp=os.environ.get("CITIZEN_QAPP") == "1",
        fast_path=os.environ.get("CITIZEN_FAST_PATH") == "1",
        store_url=os.environ.get("CITIZEN_STORE_URL") or None,
    )
