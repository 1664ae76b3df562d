"""A small app with rate limits as a user would write them: the subject of the window tests.

``create_app`` builds it in process; :mod:`tests.ratelimit_app_asgi` builds it
in each worker of a real server.

- ``GET /burst`` allows 10 per 10 seconds per client (sliding window);
- ``GET /burst-fixed`` the same in fixed windows;
- ``GET /tiers`` allows 5 a minute and 3 an hour: the hour is the tighter;
- ``GET /stacked`` has two stacked limits, 100 and 3 a minute;
- ``GET /open`` has no limit of its own (the default limit, if any, applies);
- ``GET /exempt`` is exempt from the default limit;
- ``GET /own`` has its own limit, 5 a minute, instead of the default;
- ``GET /bp/free`` is in a blueprint exempt from the default limit;
- ``GET /lenient`` allows 1 a minute and lets requests in when the store is down;
- ``GET /strict`` allows 1 a minute and answers 503 when the store is down;
- ``GET /refunded`` counts 1 a minute and 2 an hour, then gives the request back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quart import Blueprint, Quart

from qapp.ext import Qapp, check_rate_limit, rate_limit, rate_limit_exempt, refund_rate_limit

__all__ = ["create_app"]


def create_app(instance: Path | str, config: Mapping[str, Any] | None = None) -> Quart:
    """The app, its instance folder at ``instance``; ``config`` goes into ``app.config``."""
    app = Quart(__name__, instance_path=str(instance))
    app.config.update(config or {})
    qapp = Qapp(app, sessions=False)

    @app.get("/burst")
    @qapp.rate_limit("10/10 seconds")
    async def burst() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/burst-fixed")
    @qapp.rate_limit("10/10 seconds", strategy="fixed")
    async def burst_fixed() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/tiers")
    @rate_limit("5/minute;3/hour")
    async def tiers() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/stacked")
    @rate_limit("100/minute")
    @rate_limit("3/minute")
    async def stacked() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/open")
    async def open_route() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/exempt")
    @qapp.exempt
    async def exempt() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/own")
    @rate_limit("5/minute")
    async def own() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/lenient")
    @rate_limit_exempt
    @rate_limit("1/minute", on_store_error="allow")
    async def lenient() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/strict")
    @rate_limit("1/minute")
    async def strict() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/refunded")
    async def refunded() -> dict[str, int]:
        verdict = await check_rate_limit("1/minute;2/hour", "everyone", scope="refunded")
        await refund_rate_limit(verdict)
        return {"remaining": verdict.remaining}

    blueprint = Blueprint("bp", __name__, url_prefix="/bp")

    @blueprint.get("/free")
    async def free() -> dict[str, bool]:
        return {"ok": True}

    app.register_blueprint(qapp.exempt_blueprint(blueprint))
    return app
