"""Every error answer is JSON: ``{"error": "<code>", "message": "<text>"}``.

Routes raise :class:`APIError` (or let a werkzeug ``HTTPException`` or a
store error through); the handlers here turn each into the right status.
A store that cannot be reached is a 503 with ``Retry-After`` everywhere (the
extension's handlers, :mod:`qapp.ext.errors`), and an unexpected exception
is a bare 500 whose details go to the log only.
"""

from __future__ import annotations

import re

from quart import Quart, Response
from werkzeug.exceptions import HTTPException, InternalServerError

from qapp.ext import error_response

__all__ = ["APIError", "error_response", "init_app"]


class APIError(Exception):
    """An error answer chosen by a route: a status, a short code and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _code(exc: HTTPException) -> str:
    # "Method Not Allowed" -> "method_not_allowed"
    return re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")


def init_app(app: Quart) -> None:
    """Install the JSON error handlers on ``app``."""

    @app.errorhandler(APIError)
    async def api_error(exc: APIError) -> Response:
        return error_response(exc.status, exc.code, exc.message)

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
