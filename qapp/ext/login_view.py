"""Where a browser without a login goes: the app's login page, with ``next=`` the page it asked for.

An API client asking for JSON gets the JSON 401 (``login_required``) as
before; a browser, whose ``Accept`` prefers ``text/html``, is redirected to
``QAPP_LOGIN_VIEW`` (an endpoint name, or a URL), with ``next=`` the path
it asked for. ``next=`` is only ever a local path (``/...``, never
``//host`` or a scheme), both when it is made and when :func:`next_url`
reads it back after the login, so that the login page is no open redirect.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from quart import Response, has_request_context, redirect, request, url_for

__all__ = ["is_local_path", "is_url", "login_redirect", "next_url", "prefers_html"]


def is_local_path(target: str) -> bool:
    """True if ``target`` is a path on this site (``/a?b``): never ``//host`` nor a URL."""
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return False
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in target):
        # Browsers drop tabs and newlines and read "\" as "/": "/\t/evil" is "//evil".
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


def is_url(view: str) -> bool:
    """True if a ``QAPP_LOGIN_VIEW`` is a URL or a path, not an endpoint name."""
    return view.startswith("/") or "://" in view


def prefers_html() -> bool:
    """True if the current request (not a websocket) would rather have HTML than JSON."""
    if not has_request_context():
        return False
    accept = request.accept_mimetypes
    return accept.quality("text/html") > accept.quality("application/json")


def login_redirect(view: str | None) -> Response | None:
    """A redirect to the login page ``view`` for a browser; None for an API client or no view."""
    if view is None or not prefers_html():
        return None
    target = view if is_url(view) else url_for(view)
    here = request.full_path.rstrip("?") if request.query_string else request.path
    if is_local_path(here):
        target += ("&" if "?" in target else "?") + urlencode({"next": here})
    return redirect(target)  # type: ignore[return-value]


def next_url(default: str = "/") -> str:
    """Where to go after a login: ``next=`` if it is a local path, else ``default``."""
    target = request.args.get("next", "")
    return target if is_local_path(target) else default
