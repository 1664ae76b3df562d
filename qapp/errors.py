"""Every error answer is JSON: ``{"error": "<code>", "message": "<text>"}``.

Routes raise :class:`APIError` (or let a werkzeug ``HTTPException`` or a
store error through); the handlers here turn each into the right status.
A store that cannot be reached is a 503 with ``Retry-After`` everywhere, and
an unexpected exception is a bare 500 whose details go to the log only.
"""

from __future__ import annotations

import logging
import re

from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

from qapp.state import LockTimeout, StoreUnavailable

log = logging.getLogger(__name__)

#: Seconds a client should wait before retrying after a 503.
RETRY_AFTER = 1


class APIError(Exception):
    """An error answer chosen by a route: a status, a short code and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> Response:
    """A JSON error answer in the project's shape."""
    response = jsonify(error=code, message=message)
    response.status_code = status
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def _code(exc: HTTPException) -> str:
    # "Method Not Allowed" -> "method_not_allowed"
    return re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")


def init_app(app: Quart) -> None:
    """Install the JSON error handlers on ``app``."""

    @app.errorhandler(APIError)
    async def api_error(exc: APIError) -> Response:
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(StoreUnavailable)
    async def store_unavailable(exc: StoreUnavailable) -> Response:
        log.warning("store unavailable: %s", exc)
        return error_response(503, "store_unavailable", "the store cannot be reached; retry soon")

    @app.errorhandler(LockTimeout)
    async def lock_timeout(exc: LockTimeout) -> Response:
        log.warning("lock timeout: %s", exc)
        return error_response(503, "busy", "the resource is busy; retry soon")

    @app.errorhandler(InternalServerError)
    async def internal_error(exc: InternalServerError) -> Response:
        # The cause was logged by Quart; a client learns nothing from it.
        return error_response(500, "internal_error", "the server failed to answer")

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        response = error_response(exc.code or 500, _code(exc), exc.description or "")
        if exc.code == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response
