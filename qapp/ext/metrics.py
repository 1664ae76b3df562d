"""``/metrics``: the app's counts in Prometheus's text format, for every worker at once.

Off unless ``QAPP_METRICS`` is on (config key or environment variable).
Then :func:`install` counts each request (route, method, status, time in
the app), times every call to the app's stores (:func:`qapp.metrics.instrument`)
and serves ``GET /metrics``, which only these may read:

- with ``QAPP_METRICS_TOKEN`` set, a request carrying
  ``Authorization: Bearer <token>`` (401 otherwise), from anywhere;
- without it, a client on the loopback address only (403 otherwise): the
  client as :func:`~qapp.ext.ratelimit.client_address` tells it, so a
  trusted proxy's forwarded address counts, not the proxy's own.

What each metric means is in :mod:`qapp.metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import time
from typing import Any

from quart import Quart, Response, request

from qapp import metrics
from qapp.ext.errors import error_response
from qapp.ext.ratelimit import client_address

__all__ = ["PATH", "TOKEN_KEY", "install"]

#: Where the counts are served.
PATH = "/metrics"
#: The setting that, when set, lets a bearer of this token read them from anywhere.
TOKEN_KEY = "QAPP_METRICS_TOKEN"
#: The route label of a request that matched no route (a 404 or a 405).
UNMATCHED = "(unmatched)"


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _allowed(token: str | None) -> Response | None:
    """None if the current request may read the counts, else the refusal."""
    if token:
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
            refusal = error_response(401, "unauthorized", "a bearer token is required")
            refusal.headers["WWW-Authenticate"] = "Bearer"
            return refusal
        return None
    if not _loopback(client_address()):
        return error_response(403, "forbidden", "metrics are served to the loopback address only")
    return None


def install(app: Quart, token: str | None = None) -> None:
    """Count ``app``'s requests and store calls, and serve them at ``/metrics``."""
    metrics.enable()
    handle = app.handle_request

    async def counted(req: Any) -> Any:
        # Around Quart's own handling: the answer here is final (hooks and
        # the session's save have run), and the request knows its URL rule.
        began = time.perf_counter()
        status: int | str = 500
        try:
            response = await handle(req)
            status = response.status_code
            return response
        except asyncio.CancelledError:
            status = 499  # the client went away first (nginx's code for it)
            raise
        finally:
            rule = req.url_rule
            route = UNMATCHED if rule is None else rule.rule
            metrics.request(route, req.method, status, time.perf_counter() - began)

    app.handle_request = counted  # type: ignore[method-assign,assignment]

    async def serve_metrics() -> Response:
        refusal = _allowed(token)
        if refusal is not None:
            return refusal
        body, content_type = await asyncio.to_thread(metrics.exposition)
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})

    app.add_url_rule(PATH, "qapp_metrics", serve_metrics, methods=["GET"])

    flusher: asyncio.Task[None] | None = None

    async def flush_now_and_then() -> None:
        while True:
            await asyncio.sleep(metrics.FLUSH_EVERY)
            metrics.flush()

    @app.before_serving
    async def start_flushing() -> None:
        nonlocal flusher
        flusher = asyncio.create_task(flush_now_and_then())

    @app.after_serving
    async def stop_flushing() -> None:
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        # What this worker counted since the last flush is not lost on a stop.
        metrics.flush()
