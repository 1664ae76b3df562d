"""A small app with logins as a user would write it: the subject of tests/test_auth_features.py.

``create_app`` builds it in process; :mod:`tests.auth_app_asgi` builds it in
each worker of a real server, its settings from ``QAPP_*`` variables.

- ``POST /login`` logs in ``{"id": ..., "remember": bool}`` (any id: the
  route passes it on as given, so a wrong type is the library's to refuse);
- ``GET /me`` needs a login, ``POST /password`` a fresh one;
- ``POST /logout`` and ``POST /logout-everywhere`` end one or all sessions;
- ``GET /login-page`` is the login page browsers are sent to;
- ``GET /after-login`` says where ``next=`` would send the user;
- ``GET /api/me`` takes a bearer token (``tok-<user>`` is ``<user>``'s);
- ``GET /whoami`` says who the user is, if anyone, without needing one;
- websocket ``/ws`` sends back who the user is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quart import Quart, g, request, websocket

from qapp.ext import (
    Qapp,
    fresh_login_required,
    login_required,
    logout_everywhere,
    next_url,
    session,
)

__all__ = ["create_app"]


def create_app(instance: Path | str, config: Mapping[str, Any] | None = None) -> Quart:
    """The app, its instance folder at ``instance``; ``config`` goes into ``app.config``."""
    app = Quart(__name__, instance_path=str(instance))
    app.config.update(config or {})
    qapp = Qapp(app, session_values=["visits"])

    @qapp.user_loader
    async def load_user(user_id: str | int) -> dict[str, Any]:
        # The id as the session gave it back: its type is part of the answer.
        return {"id": user_id, "type": type(user_id).__name__}

    @qapp.token_loader
    async def load_token(token: str) -> dict[str, Any] | None:
        if not token.startswith("tok-"):
            return None
        return {"id": token.removeprefix("tok-"), "type": "token"}

    @app.post("/login")
    async def login() -> dict[str, Any]:
        body = await request.get_json()
        user = await qapp.login_user(body["id"], remember=bool(body.get("remember")))
        return {"user": user}

    @app.get("/me")
    @login_required
    async def me() -> dict[str, Any]:
        return {"user": g.user}

    @app.get("/whoami")
    async def whoami() -> dict[str, Any]:
        return {"user": g.user}

    @app.post("/password")
    @fresh_login_required
    async def change_password() -> dict[str, bool]:
        return {"changed": True}

    @app.post("/logout")
    async def logout() -> dict[str, bool]:
        await qapp.logout_user()
        return {"ok": True}

    @app.post("/logout-everywhere")
    @login_required
    async def logout_all() -> dict[str, bool]:
        await logout_everywhere(g.user["id"])
        return {"ok": True}

    @app.get("/login-page")
    async def login_page() -> str:
        return "<form>log in</form>"

    @app.get("/after-login")
    async def after_login() -> dict[str, str]:
        return {"next": next_url()}

    @app.get("/api/me")
    @login_required
    async def api_me() -> dict[str, Any]:
        return {"user": g.user}

    @app.post("/visit")
    async def visit() -> dict[str, int]:
        return {"visits": await session.incr("visits")}

    @app.websocket("/ws")
    async def ws() -> None:
        await websocket.accept()
        await websocket.send_json({"user": g.user})

    return app
