"""JSON error answers, and the one place a store outage becomes a 503 with ``Retry-After``.

Every error the extension answers is JSON ``{"error": "<code>", "message":
"<text>"}``. A store that cannot be reached (:class:`~qapp.state.StoreUnavailable`)
or a lock not acquired in time (:class:`~qapp.state.LockTimeout`) is a 503
that tells the client when to retry, on every route of the app, never a 500.
"""

from __future__ import annotations

import logging

from quart import Quart, Response, jsonify

from qapp.state import LockTimeout, StaleLease, StoreUnavailable, dumps
from qapp.store import metrics

__all__ = [
    "RETRY_AFTER",
    "error_response",
    "install_handlers",
    "turn_into_503",
    "turn_into_error",
]

log = logging.getLogger(__name__)

#: Seconds a client should wait before retrying after a 503.
RETRY_AFTER = 1


def error_response(status: int, code: str, message: str) -> Response:
    """A JSON error answer; a 503 also says when to retry."""
    response = jsonify(error=code, message=message)
    response.status_code = status
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def turn_into_error(
    response: Response, status: int, code: str, message: str, retry_after: int = RETRY_AFTER
) -> None:
    """Make an answer already built into a JSON error that says when to retry, in place.

    For hooks that run after the route: the client must not be told that a
    change it asked for was kept when it was not.
    """
    response.status_code = status
    response.set_data(dumps({"error": code, "message": message}))
    response.headers["Content-Type"] = "application/json"
    response.headers["Retry-After"] = str(retry_after)


def turn_into_503(response: Response, message: str) -> None:
    """Make an answer already built into the store-unavailable 503, in place."""
    metrics.unavailable("session_save")
    turn_into_error(response, 503, "store_unavailable", message)


def install_handlers(app: Quart) -> None:
    """Answer a store outage or a lock timeout anywhere in ``app`` with a JSON 503.

    A write refused for a stale fencing token (:class:`~qapp.state.StaleLease`)
    is a 409: the request lost its lock (its lease ran out, and maybe a newer
    holder took it), and its write was not made; retrying starts over under a
    new lease.
    """

    @app.errorhandler(StaleLease)
    async def stale_lease(exc: StaleLease) -> Response:
        log.warning("stale lease: %s", exc)
        return error_response(
            409, "stale_lease", "the lock was lost before the write; nothing was written"
        )

    @app.errorhandler(StoreUnavailable)
    async def store_unavailable(exc: StoreUnavailable) -> Response:
        log.warning("store unavailable: %s", exc)
        metrics.unavailable("store_unavailable")
        return error_response(503, "store_unavailable", "the store cannot be reached; retry soon")

    @app.errorhandler(LockTimeout)
    async def lock_timeout(exc: LockTimeout) -> Response:
        log.warning("lock timeout: %s", exc)
        metrics.unavailable("lock_timeout")
        return error_response(503, "busy", "the resource is busy; retry soon")
