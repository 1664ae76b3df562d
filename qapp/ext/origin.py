"""Refuse state-changing requests that another site made a browser send with its cookie (403).

A browser sends a site's cookies with every request to that site, even one
that another site's page started (a form, a ``fetch``). The session cookie
is what turns such a forged request into the victim's own act, so the
check guards exactly the requests that carry it: an unsafe method (not
GET, HEAD, OPTIONS or TRACE) with the app's session cookie
(``SESSION_COOKIE_NAME``, ``session`` by default) must show that it came
from the app's own pages:

- ``Sec-Fetch-Site: same-origin`` or ``none`` (typed by the user) passes;
- otherwise (``same-site``, ``cross-site``, or no ``Sec-Fetch-Site``) the
  ``Origin`` header must name a trusted origin. ``Origin: null``, a
  malformed ``Origin`` and several ``Origin`` headers are refused; a
  request without ``Sec-Fetch-Site`` and without ``Origin`` passes, since
  every current browser sends at least one of them with a cross-site POST.

Trusted origins, compared as (scheme, host, port) with the scheme's default
port filled in (http 80, https 443), the host lowercased and an IPv6
literal in its compressed form: the request's own ``Host`` with its scheme
and with ``PREFERRED_URL_SCHEME`` (behind a proxy that ends TLS the app
sees ``http`` while browsers say ``https``); ``SERVER_NAME`` likewise when
it is set; and each entry of ``QAPP_TRUSTED_ORIGINS`` (a list, or a string
separated by commas or spaces, each read strictly when the app starts).

A route that must accept cross-site posts with the cookie, such as the
``form_post`` callback of an OIDC or SAML login, is exempted with
:func:`cross_site_exempt`.

This changed on purpose: requests without the session cookie are no longer
checked. Anyone can send those directly, without a browser, so refusing a
browser's copy protected nothing, and it refused the cross-origin API calls
an app allows with its own CORS headers (``POST /api/items`` with
``Origin: https://other.example``). What a cookieless forged request still
borrows is the victim's network address, which rate limits count per
client; a route that must not be spent that way needs a token of its own.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import NamedTuple, TypeVar

from quart import Quart, Response, current_app, request
from werkzeug.exceptions import Forbidden

from qapp.ext.errors import error_response
from qapp.state import ConfigurationError

__all__ = [
    "CrossSiteRequest",
    "Origin",
    "cross_site",
    "cross_site_exempt",
    "install",
    "parse_origin",
    "trusted_origins",
]

F = TypeVar("F", bound=Callable[..., object])

#: Methods that change nothing, which any site may send.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

#: Ports an origin has when it names none.
DEFAULT_PORTS = {"http": 80, "https": 443}

#: The attribute :func:`cross_site_exempt` sets on a view function.
EXEMPT_ATTRIBUTE = "qapp_cross_site_exempt"

#: ``scheme://host[:port]`` and nothing more: no user, path, query or fragment.
_ORIGIN = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[^\]]*\]|[^:/?#@\[\]]+)(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE,
)
#: A host name: dot-separated labels of letters, digits, ``-`` and ``_``.
_HOSTNAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


class Origin(NamedTuple):
    """An origin as compared: scheme and host lowercased, the port filled in when known."""

    scheme: str
    host: str
    port: int | None


class CrossSiteRequest(Forbidden):
    """A state-changing request from another site: a JSON 403."""

    description = "a state-changing request from another site is refused"


def parse_origin(text: str) -> Origin:
    """Read ``scheme://host[:port]`` strictly, as a browser serialises an ``Origin``.

    Raises:
        ValueError: ``text`` is not such an origin.
    """
    # ASCII only, as browsers serialise it: "\u212a".lower() is "k", and re's
    # IGNORECASE would let such lookalikes through.
    match = _ORIGIN.fullmatch(text.strip()) if text.isascii() else None
    if match is None:
        raise ValueError(f"not an origin (scheme://host[:port]): {text!r}")
    scheme = match["scheme"].lower()
    host = match["host"].lower()
    if host.startswith("["):
        try:
            host = ipaddress.IPv6Address(host[1:-1]).compressed
        except ValueError:
            raise ValueError(f"not an IPv6 address in {text!r}") from None
        if "%" in host:
            raise ValueError(f"a zone id has no place in an origin: {text!r}")
    elif not _HOSTNAME.fullmatch(host) or len(host) > 253:
        raise ValueError(f"not a host name in {text!r}")
    elif re.fullmatch(r"[0-9.]+", host):
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(f"not an IPv4 address in {text!r}") from None
    port = int(match["port"]) if match["port"] is not None else DEFAULT_PORTS.get(scheme)
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return Origin(scheme, host, port)


def trusted_origins(entries: Iterable[str] | str | None) -> frozenset[Origin]:
    """Parse ``QAPP_TRUSTED_ORIGINS``: a list, or a string separated by commas or spaces.

    Raises:
        ConfigurationError: an entry is not ``scheme://host[:port]``.
    """
    if not entries:
        return frozenset()
    items = re.split(r"[,\s]+", entries) if isinstance(entries, str) else list(entries)
    found = set()
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(f"QAPP_TRUSTED_ORIGINS: not a string: {item!r}")
        if not item.strip():
            continue
        try:
            found.add(parse_origin(item))
        except ValueError as exc:
            raise ConfigurationError(f"QAPP_TRUSTED_ORIGINS: {exc}") from None
    return frozenset(found)


def cross_site_exempt(view: F) -> F:
    """Let cross-site requests with the session cookie reach this view (e.g. a form_post callback).

    Put it above or below ``@app.post(...)``; it marks the function and
    changes nothing else.
    """
    setattr(view, EXEMPT_ATTRIBUTE, True)
    return view


def _exempt() -> bool:
    rule = request.url_rule
    if rule is None or rule.endpoint is None:
        return False
    view = current_app.view_functions.get(rule.endpoint)
    return bool(getattr(view, EXEMPT_ATTRIBUTE, False))


def _carries_session_cookie() -> bool:
    """True if the request has the app's session cookie, as the session interface reads it."""
    # From the ASGI scope first: most API requests carry no cookie at all,
    # and then nothing needs parsing.
    if not any(key.lower() == b"cookie" for key, _ in request.scope["headers"]):
        return False
    name = current_app.session_interface.get_cookie_name(current_app)
    return name in request.cookies


def _own_origins() -> set[Origin]:
    """The origins the current request's app is served at (see the module docstring)."""
    schemes = {request.scheme, str(current_app.config.get("PREFERRED_URL_SCHEME") or "http")}
    hosts = [request.host, current_app.config.get("SERVER_NAME")]
    own = set()
    for host in hosts:
        if not host:
            continue
        for scheme in schemes:
            try:
                own.add(parse_origin(f"{scheme}://{host}"))
            except ValueError:
                # A Host header that names no host: no origin matches it.
                continue
    return own


def refusal(trusted: frozenset[Origin] = frozenset()) -> str | None:
    """Why the current request must be refused as cross-site, or None if it may pass.

    Only the headers are judged here: the method, the cookie and the
    exemption are :func:`install`'s to check.
    """
    sites: list[str] = []
    origins: list[str] = []
    for key, value in request.scope["headers"]:
        name = key.lower()
        if name == b"sec-fetch-site":
            sites.append(bytes(value).decode("latin-1").strip().lower())
        elif name == b"origin":
            origins.append(bytes(value).decode("latin-1").strip())
    if len(sites) == 1 and sites[0] in {"same-origin", "none"}:
        return None
    if not sites and not origins:
        return None
    if not origins:
        return "a state-changing request from another site is refused"
    if len(origins) > 1:
        return "a request with several Origin headers is refused"
    if origins[0].lower() == "null":
        return "a state-changing request from an opaque origin (Origin: null) is refused"
    try:
        origin = parse_origin(origins[0])
    except ValueError:
        return "the Origin header is malformed"
    if origin in trusted or origin in _own_origins():
        return None
    return "a state-changing request from another site is refused"


def cross_site(trusted: frozenset[Origin] = frozenset()) -> bool:
    """True if the current request's headers say an untrusted site started it."""
    return refusal(trusted) is not None


def install(app: Quart, trusted: frozenset[Origin] = frozenset()) -> None:
    """Check every unsafe request of ``app`` that carries its session cookie, before all else."""

    @app.errorhandler(CrossSiteRequest)
    async def refused(exc: CrossSiteRequest) -> Response:
        return error_response(403, "cross_site_request", exc.description or "")

    async def check_origin() -> None:
        if request.method in SAFE_METHODS or not _carries_session_cookie() or _exempt():
            return
        reason = refusal(trusted)
        if reason is not None:
            raise CrossSiteRequest(reason)

    # First of all the hooks: a refused request reads and writes no store.
    app.before_request_funcs.setdefault(None, []).insert(0, check_origin)
