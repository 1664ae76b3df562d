"""A small app as a user would write it on qapp: the subject of the cross-site and client tests.

``create_app`` builds it in process; :mod:`tests.user_app_asgi` builds it in
each worker of a real server, its settings from ``QAPP_*`` variables.

- ``POST /login`` starts a session (the session cookie is set);
- ``POST /change`` is a state-changing route a forged request would aim at;
- ``POST /api/items`` is a cookieless API that other origins may call: it
  answers with its own CORS header;
- ``POST /oidc/callback`` and ``POST /saml/acs`` take another site's
  ``form_post`` with the cookie, exempted from the cross-site check (the
  decorator below and above ``@app.post``);
- ``GET /whoami`` says who the client is; ``POST /limited`` allows 2 a minute
  per client.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quart import Quart, Response, jsonify, session

from qapp.ext import Qapp, client_address, client_key, cross_site_exempt

__all__ = ["create_app"]


def create_app(instance: Path | str, config: Mapping[str, Any] | None = None) -> Quart:
    """The app, its instance folder at ``instance``; ``config`` goes into ``app.config``."""
    app = Quart(__name__, instance_path=str(instance))
    app.config.update(config or {})
    qapp = Qapp(app)

    @app.post("/login")
    async def login() -> dict[str, str]:
        session["user"] = "ada"
        return {"user": "ada"}

    @app.post("/change")
    async def change() -> dict[str, Any]:
        return {"changed": True, "user": session.get("user")}

    @app.post("/api/items")
    async def create_item() -> Response:
        response = jsonify({"created": True})
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    @app.post("/oidc/callback")
    @cross_site_exempt
    async def oidc_callback() -> dict[str, Any]:
        return {"signed_in": True, "user": session.get("user")}

    @qapp.cross_site_exempt
    @app.post("/saml/acs")
    async def saml_acs() -> dict[str, bool]:
        return {"signed_in": True}

    @app.get("/whoami")
    async def whoami() -> dict[str, str]:
        return {"address": client_address(), "key": client_key()}

    @app.post("/limited")
    @qapp.rate_limit("2/minute")
    async def limited() -> dict[str, bool]:
        return {"ok": True}

    return app
