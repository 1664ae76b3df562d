"""The session cookie: a signed random id in, a signed random id out, nothing else.

Quart's session interface, for :class:`~qapp.ext.sessions.ServerSession`:
opening a session only checks the cookie's signature; saving it writes a
changed dict through the session's own :meth:`~qapp.ext.sessions.ServerSession.save`
and sets (or drops) the cookie. All store I/O happens in the request, where
store errors become JSON answers; the ids are signed with itsdangerous
(HMAC-SHA256 of the app's secret key, as Quart signs its own cookies).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from quart import Quart, Response
from quart.sessions import SessionInterface, SessionMixin
from quart.wrappers import BaseRequestWebsocket
from werkzeug.wrappers import Response as WerkzeugResponse

from qapp.ext import ratelimit
from qapp.ext.errors import turn_into_503, turn_into_error
from qapp.ext.sessions import ID_PATTERN, PRIVATE, SALT, ServerSession, current
from qapp.state import StoreError, StoreUnavailable

__all__ = ["StoreSessionInterface", "install"]

log = logging.getLogger(__name__)

#: Good cookies a worker remembers with their session ids, per app (then it starts again).
VERIFIED_KEPT = 4096


#: What :func:`cookie_value` answers for a quoted value, which it leaves to werkzeug.
QUOTED = '"'


def cookie_value(headers: Iterable[tuple[bytes, bytes]], name: str) -> str | None:
    """The first value of cookie ``name`` in raw ``Cookie`` headers; None without one.

    The session cookie is an itsdangerous token (URL-safe characters and
    dots), so finding it needs none of werkzeug's cookie parsing, which
    builds a dict of every cookie the browser sends, on every request. A
    quoted value answers :data:`QUOTED`, for werkzeug to unquote. A value
    split wrongly here can only fail its signature check: it is never
    adopted.
    """
    wanted = name.encode("latin-1")
    for key, value in headers:
        if key.lower() != b"cookie":
            continue
        for part in value.split(b";"):
            found, equals, raw = part.strip().partition(b"=")
            if equals and found.strip() == wanted:
                raw = raw.strip()
                return QUOTED if raw.startswith(b'"') else raw.decode("latin-1")
    return None


def derive_key(secret: str | bytes) -> bytes:
    """``secret`` as itsdangerous derives it with ``key_derivation="hmac"`` and the session salt."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(raw, SALT.encode(), hashlib.sha256).digest()


#: A signer of session ids, the keys it was made from, and the cookies it found good.
Signer = tuple[tuple[str | bytes, ...], URLSafeSerializer, dict[str, str]]


class StoreSessionInterface(SessionInterface):
    """Quart's session hooks for :class:`ServerSession`: they only sign and read cookies.

    All store I/O happens in the hook and the session's methods, inside the
    request, where store errors become JSON answers.
    """

    def __init__(self) -> None:
        # The last signer made, the keys it was made from and the cookies it
        # found good: one per app, made again only if the app's keys change.
        self._signer: Signer | None = None

    def serializer(self, app: Quart) -> URLSafeSerializer:
        """The signer of session ids: HMAC-SHA256 keyed by the app's secret key.

        The same signatures as itsdangerous' ``key_derivation="hmac"``, with
        each key derived once, not on every request: the derived keys are
        given with ``key_derivation="none"``.
        """
        keys: tuple[str | bytes, ...] = (
            *(app.config.get("SECRET_KEY_FALLBACKS") or ()),
            app.secret_key,  # type: ignore[arg-type]
        )
        if self._signer is None or self._signer[0] != keys:
            derived = [derive_key(key) for key in keys]
            # itsdangerous signs with the last key and accepts all of them.
            signer = URLSafeSerializer(
                derived,
                salt=SALT,
                signer_kwargs={"key_derivation": "none", "digest_method": hashlib.sha256},
            )
            self._signer = (keys, signer, {})
        return self._signer[1]

    def session_id(self, app: Quart, cookie: str) -> str | None:
        """The session id ``cookie`` carries, if its signature is good; else None.

        A cookie found good is remembered with its id (at most
        :data:`VERIFIED_KEPT`, forgotten when the app's keys change): the
        same string would pass the same check, and a client sends its cookie
        with every request. Only good cookies are remembered, so forged ones
        pay for the check every time and grow nothing.
        """
        serializer = self.serializer(app)
        assert self._signer is not None
        verified = self._signer[2]
        known = verified.get(cookie)
        if known is not None:
            return known
        try:
            value = serializer.loads(cookie)
        except BadSignature:
            return None
        if not (isinstance(value, str) and ID_PATTERN.fullmatch(value)):
            return None
        if len(verified) >= VERIFIED_KEPT:
            verified.clear()
        verified[cookie] = value
        return value

    def get_expiration_time(self, app: Quart, session: SessionMixin) -> datetime | None:
        """When the cookie ends: None (with the browser), or the session's ttl from now.

        A remembered session (``login_user(..., remember=True)`` or
        ``session.permanent``) lives in the store for its sliding ttl, so its
        cookie does too, not Quart's fixed ``PERMANENT_SESSION_LIFETIME``.
        """
        if isinstance(session, ServerSession) and session.remembered:
            return datetime.now(UTC) + timedelta(seconds=session.ttl())
        return None

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> ServerSession:
        # Most API clients send no cookies at all: then there is nothing to verify.
        name = self.get_cookie_name(app)
        cookie = cookie_value(request.scope["headers"], name)
        if cookie == QUOTED:
            # A quoted value (never one this module set): werkzeug's parser.
            cookies = request.cookies
            cookie = cookies[name] if name in cookies else None  # noqa: SIM401
        return ServerSession(self.session_id(app, cookie) if cookie else None)

    async def save_session(
        self,
        app: Quart,
        session: SessionMixin,
        response: Response | WerkzeugResponse | None,
    ) -> None:
        if response is None or not isinstance(session, ServerSession) or session.stateless:
            # A request with a bearer token has no cookie to set or drop.
            return
        if session.accessed or session.modified or session.issue_cookie or session.drop_cookie:
            # The answer depends on who asked: no shared cache may keep or reuse it.
            response.vary.add("Cookie")
            response.headers["Cache-Control"] = PRIVATE
        if session.modified:
            # A route changed the dict without calling save(); save it now.
            try:
                await session.save()
            except StoreError as exc:
                log.warning("session not saved: %s", exc)
                turn_into_503(response, "the session could not be saved")  # type: ignore[arg-type]
                return
            except ratelimit.RateLimited as exc:
                # A new session over this client's quota: nothing was written.
                turn_into_error(
                    response,  # type: ignore[arg-type]
                    429,
                    "too_many_requests",
                    exc.description or "",
                    exc.verdict.retry_after,
                )
                return
        options: dict[str, Any] = {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "samesite": self.get_cookie_samesite(app),
            "httponly": self.get_cookie_httponly(app),
            "partitioned": self.get_cookie_partitioned(app),
        }
        name = self.get_cookie_name(app)
        if session.issue_cookie and session.sid is not None:
            value = self.serializer(app).dumps(session.sid)
            expires = self.get_expiration_time(app, session)
            max_age = None if expires is None else int(session.ttl())
            response.set_cookie(name, value, expires=expires, max_age=max_age, **options)
        elif session.drop_cookie:
            response.delete_cookie(name, **options)


def install(app: Quart) -> None:
    """Keep ``app``'s sessions in its session store; cookies HttpOnly and SameSite=Lax.

    The session is read before each request and each websocket: a websocket
    handler sees what its handshake's cookie names, as with Quart's own
    sessions. As with those, a change a websocket handler makes to the dict
    is not saved at its end: a websocket has no answer to set a cookie on.

    Quart's ``SESSION_COOKIE_*`` keys apply; ``SESSION_COOKIE_SECURE`` marks
    the cookie Secure for HTTPS.
    """
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    app.session_interface = StoreSessionInterface()  # type: ignore[assignment]

    @app.before_websocket
    @app.before_request
    async def load_session() -> None:
        # Only a cookie with a good signature costs a store read.
        session = current()
        if session.candidate is None:
            # Nothing offered, nothing to read: what load() would conclude.
            session.loaded = True
            return
        try:
            await session.load()
        except StoreUnavailable:
            # Not every route needs the session: a page or a health check
            # still answers. A route that does need it loads it again, which
            # retries the store and answers 503 if it is still down.
            log.debug("session store unavailable; session not loaded")
