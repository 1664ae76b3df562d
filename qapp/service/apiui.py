"""``/docs``: the interactive API page, served whole from this server.

quart-schema's own page loads Swagger UI from a CDN, so without internet
``/docs`` was blank, and its inline script would need a loose Content
Security Policy. Here the Swagger UI files come from the ``swagger-ui-py``
package (its static folder only; nothing of it is imported), the page's one
script is a static file of ours, and the policy allows this origin only
(plus the inline styles Swagger UI sets on its own elements).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from quart import Blueprint, Response, send_from_directory
from quart_schema import hide
from werkzeug.exceptions import NotFound

from qapp.service.apidoc import HTMLPage, document_response

bp = Blueprint("apiui", __name__)

#: The Swagger UI files the page uses; nothing else of the package is served.
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js"})


def _asset_dir() -> Path:
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing: pip install swagger-ui-py")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


ASSET_DIR = _asset_dir()

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>qapp API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui" data-spec="/openapi.json"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/static/docs.js"></script>
</body>
</html>
"""


def _secured(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/docs")
@document_response(HTMLPage, 200)
async def docs() -> Response:
    """The interactive API page (Swagger UI), which reads ``/openapi.json``."""
    return _secured(Response(PAGE, 200, content_type="text/html; charset=utf-8"))


@bp.get("/docs/assets/<name>")
@hide
async def asset(name: str) -> Response:
    """One of the Swagger UI files the page needs."""
    if name not in ASSETS:
        raise NotFound()
    response = await send_from_directory(ASSET_DIR, name)
    response.cache_control.max_age = 86400
    return _secured(response)
