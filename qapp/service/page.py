"""The race lab in a browser: ``GET /`` serves one static page.

The page (``qapp/static/index.html``, ``page.css`` and ``page.js``) has no
build step and talks only to the JSON API, like any other client: it fires
concurrent ``POST /counter/<strategy>`` and draws what came back, and it
drives the session counter and the auth routes. Nothing here touches a store,
so the page loads even while the store is down and can say so in words.
"""

from __future__ import annotations

import errno
import functools
from typing import Any, cast

from quart import Blueprint, Quart, Response, current_app
from quart.blueprints import BlueprintSetupState
from werkzeug.exceptions import NotFound

from qapp.service.apidoc import HTMLPage, document_response

bp = Blueprint("page", __name__)

#: The page runs only its own files: no inline script or style, no other origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@bp.get("/")
@document_response(HTMLPage, 200)
async def index() -> Response:
    """The race lab page, as plain HTML."""
    response = await current_app.send_static_file("index.html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    # Revalidate each time, so a new release's page is never stale.
    response.cache_control.no_cache = True
    return response


@bp.record_once
def guard_static_files(state: BlueprintSetupState) -> None:
    """Answer 404, not 500, for a static file name the file system cannot even look up.

    Quart's static route stats the path it is given: a name over the file
    system's limit (255 bytes) raised ENAMETOOLONG there, a 500 for
    ``GET /static/aaa…``. Found by the fuzz test. No such name is a file of ours.
    """
    app = cast(Quart, state.app)
    serve = app.view_functions["static"]

    @functools.wraps(serve)
    async def static(*args: Any, **kwargs: Any) -> Any:
        try:
            return await app.ensure_async(serve)(*args, **kwargs)
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
            raise NotFound() from None

    app.view_functions["static"] = static
