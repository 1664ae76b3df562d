"""Refuse state-changing requests that another site made a browser send (403).

A cookie travels with every request a browser sends to its site, even one
that another site's page started (a form, a ``fetch``). SameSite=Lax
cookies stop most of that, but not everything: a request that needs no
cookie at all (``POST /counter/atomic``) is still forged across sites, and
some browsers treat a site's sibling subdomains as the same site.

So unsafe methods are checked. Browsers say where a request comes from:
``Sec-Fetch-Site`` (modern browsers) must be ``same-origin`` or ``none``
(typed by the user); without it, an ``Origin`` header must name this host.
A request with neither header did not come from a browser's cross-site
page (curl, a server, a test client) and passes: it carries no cookie of
a victim's unless its sender already has it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from quart import Quart, Response, request
from werkzeug.exceptions import Forbidden

from qapp.ext.errors import error_response

__all__ = ["CrossSiteRequest", "cross_site", "install"]

#: Methods that change nothing, which any site may send.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class CrossSiteRequest(Forbidden):
    """A state-changing request from another site: a JSON 403."""

    description = "a state-changing request from another site is refused"


def _headers() -> tuple[str | None, str | None]:
    """The current request's ``Sec-Fetch-Site`` and ``Origin`` headers, each or None."""
    # From the ASGI scope, in one pass: werkzeug's Headers.get raises and
    # catches a KeyError for each missing header, and these are usually missing.
    site = origin = None
    for key, value in request.scope["headers"]:
        name = key.lower()
        if name == b"sec-fetch-site":
            site = bytes(value).decode("latin-1")
        elif name == b"origin":
            origin = bytes(value).decode("latin-1")
    return site, origin


def cross_site() -> bool:
    """True if a browser says the current request was started by another site."""
    site, origin = _headers()
    if site is not None:
        return site.strip().lower() not in {"same-origin", "none"}
    if origin is None:
        return False
    if origin.strip().lower() == "null":
        return True
    return urlsplit(origin.strip()).netloc.lower() != (request.host or "").lower()


def install(app: Quart) -> None:
    """Check every unsafe request of ``app`` before anything else runs."""

    @app.errorhandler(CrossSiteRequest)
    async def refused(exc: CrossSiteRequest) -> Response:
        return error_response(403, "cross_site_request", exc.description or "")

    async def check_origin() -> None:
        if request.method not in SAFE_METHODS and cross_site():
            raise CrossSiteRequest()

    # First of all the hooks: a refused request reads and writes no store.
    app.before_request_funcs.setdefault(None, []).insert(0, check_origin)
