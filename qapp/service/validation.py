"""Request validation: what a body, a key or a ``ttl`` must look like, and the 4xx for each.

Every rule that turns bad input into an error answer lives here, so that all
routes answer alike and no bad input reaches a store:

=====================================================  ======  ===================
input                                                  status  ``error``
=====================================================  ======  ===================
body over ``MAX_CONTENT_LENGTH`` (64 KiB)              413     request_entity_too_large
body on POST/PUT/PATCH/DELETE that is not JSON         415     unsupported_media_type
body that does not parse (or holds NaN, ±Infinity,     400     invalid_json
numbers too big for a float, a lone surrogate, or
nests deeper than ``MAX_DEPTH``)
body or query that fails its quart-schema model        400     invalid_body / invalid_query
a key outside ``[A-Za-z0-9._:-]{1,200}``               400     invalid_key
=====================================================  ======  ===================

The body checks run in a ``before_request`` hook, before any route (and before
the session is loaded), so a request that fails them touches no store at all.
Bodies are parsed by :class:`StrictJSONProvider`, which accepts exactly what
the stores can keep: JSON as RFC 8259 defines it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, NoReturn

from pydantic import Field, ValidationError
from pydantic_core import to_jsonable_python
from quart import Quart, Response, request
from quart.json.provider import DefaultJSONProvider
from quart.wrappers import Request
from quart_schema import QuartSchema, RequestSchemaValidationError
from quart_schema.validation import QuerystringValidationError
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from qapp.service import apidoc
from qapp.service.errors import APIError, error_response

__all__ = [
    "KEY_PATTERN",
    "MAX_DEPTH",
    "MAX_TTL",
    "TTL",
    "StrictJSONProvider",
    "check_key",
    "init_app",
    "json_body",
]

#: What a cache or memo key may look like.
KEY_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,200}")

#: The longest ``ttl`` accepted, in seconds (a year). The HTTP API asks only for a
#: positive number; an upper bound keeps every backend's expiry arithmetic in
#: range (Redis refuses expiry times that overflow).
MAX_TTL = 365 * 24 * 3600.0

#: A ``ttl`` as models spell it: a positive, finite number of seconds.
TTL = Annotated[float, Field(gt=0, le=MAX_TTL, allow_inf_nan=False)]

#: The deepest nesting of arrays and objects a body may have. Python's own
#: limit (about 980 levels in a request) depends on the stack in use: a body
#: just under it parsed, then failed as a 500 when it was stored or answered,
#: one or two levels deeper. A fixed limit far below it answers alike everywhere.
MAX_DEPTH = 100

#: Methods whose body, if any, must be JSON.
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


#: The published schema of a ``key`` path parameter.
KEY_SCHEMA = {
    "type": "string",
    "pattern": f"^{KEY_PATTERN.pattern}$",
    "minLength": 1,
    "maxLength": 200,
}


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid cache or memo key, else raise a 400."""
    if not KEY_PATTERN.fullmatch(key):
        raise APIError(400, "invalid_key", "a key is 1 to 200 characters from A-Z a-z 0-9 . _ : -")
    return key


class NotJSON(ValueError):
    """A body that the strict parser refuses, with a reason fit to show the client."""


#: The most digits a JSON integer may have: Python's own limit for turning
#: text into an int, checked here so that its message (which names an
#: interpreter setting) never reaches a client.
MAX_INT_DIGITS = 4300


def _reject_constant(name: str) -> NoReturn:
    raise NotJSON(f"{name} is not JSON")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise NotJSON(f"a number has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _check_tree(value: Any) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` and strings that are not UTF-8.

    ``json.loads`` turns ``"\\ud800"`` into a lone surrogate, which no UTF-8
    store can keep (SQLite answered it as a 503, Redis as a 500). Iterative,
    so a deep value cannot exhaust the stack here either.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise NotJSON("a string holds a lone surrogate, which is not text") from None
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise NotJSON(f"JSON nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotJSON(f"number {text[:40]} does not fit in a float")
    return value


class StrictJSONProvider(DefaultJSONProvider):
    """Quart's JSON, minus the extensions of Python's ``json`` that no store can keep.

    ``json.loads`` accepts ``NaN`` and ``Infinity``, turns ``1e400`` into
    ``inf`` and raises ``RecursionError`` (not ``ValueError``) on deep nesting;
    each would surface later as a 500. Here each is a ``ValueError``, which
    the request turns into a 400.
    """

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("parse_constant", _reject_constant)
        kwargs.setdefault("parse_float", _finite_float)
        kwargs.setdefault("parse_int", _bounded_int)
        try:
            value = super().loads(s, **kwargs)
        except RecursionError:
            raise NotJSON("JSON nested too deeply") from None
        _check_tree(value)
        return value

    @staticmethod
    def default(o: Any) -> Any:
        # Models returned by routes (quart-schema's habit) encode as plain JSON.
        return to_jsonable_python(o)


def _reason(error: Exception | None) -> str:
    """Why a body did not parse, in words that reveal nothing of the server's internals."""
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno} column {error.colno}"
    if isinstance(error, NotJSON):
        return str(error)
    return "it cannot be read"


class StrictRequest(Request):
    """A request whose JSON errors are the project's 400, with the parser's reason."""

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise APIError(400, "invalid_json", f"the body is not valid JSON: {_reason(error)}")


def has_body() -> bool:
    """True if the current request announces a body (a length above 0, or chunks)."""
    # One pass over the raw headers: most requests have neither.
    length = encoding = None
    for key, value in request.scope["headers"]:
        name = key.lower()
        if name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            encoding = bytes(value)
    if length is not None and length != b"0" and request.content_length:
        return True
    return encoding is not None and b"chunked" in encoding.lower()


async def check_body() -> None:
    """Refuse an oversized, non-JSON or unparsable body before any route runs."""
    if not has_body() or request.routing_exception is not None:
        # A 404 or 405 is answered as such whatever the body.
        return
    limit = request.max_content_length
    if limit is not None and (request.content_length or 0) > limit:
        raise RequestEntityTooLarge(f"a request body is at most {limit} bytes")
    if request.method in STATE_CHANGING and not request.is_json:
        raise UnsupportedMediaType("a request body must be JSON (Content-Type: application/json)")
    if request.is_json:
        # Quart decodes the body as UTF-8 without a guard: check it here.
        raw = await request.get_data(as_text=False)
        try:
            raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            raise APIError(400, "invalid_json", f"the body is not UTF-8: {exc.reason}") from None
        # Parsed once here and cached on the request; routes get it for free.
        await request.get_json()


async def json_body() -> Any:
    """The current request's JSON body: any JSON value, ``null`` included.

    Raises:
        APIError: 400 when there is no body at all.
    """
    if not has_body():
        raise APIError(400, "missing_body", "a JSON body is required")
    return await request.get_json()


def _describe(error: Exception) -> str:
    if isinstance(error, ValidationError):
        parts = []
        for item in error.errors(include_url=False):
            where = ".".join(str(p) for p in item["loc"]) or "body"
            parts.append(f"{where}: {item['msg']}")
        return "; ".join(parts)
    return str(error)


def init_app(app: Quart) -> None:
    """Install strict JSON parsing, the body checks, quart-schema and its error answers.

    ``/openapi.json`` describes the API (``/docs``, :mod:`qapp.service.apiui`, renders it).
    """
    plain_make_response = app.make_response
    QuartSchema(
        app,
        info={"title": "qapp", "version": "0.1.0"},
        redoc_ui_path=None,
        scalar_ui_path=None,
        # Served by qapp.service.apiui, from this server, not from a CDN.
        swagger_ui_path=None,
        conversion_preference="pydantic",
        openapi_provider_class=apidoc.Provider,
    )
    converting_make_response = app.make_response

    async def make_response(result: Any) -> Any:
        # quart-schema runs every answer through pydantic, building a
        # TypeAdapter for a plain dict each time: about a third of a small
        # request's CPU. Plain values skip it; a model still converts.
        value = result[0] if isinstance(result, tuple) else result
        if isinstance(value, dict | list | str | bytes | Response):
            return await plain_make_response(result)
        return await converting_make_response(result)

    app.make_response = make_response  # type: ignore[method-assign]
    # After QuartSchema, which installs a provider of its own.
    app.json = StrictJSONProvider(app)
    app.request_class = StrictRequest
    # werkzeug answers "/cache//k" with a redirect to "/cache/k": another
    # key's data, and a 308 makes a client repeat a PUT there. A path is
    # matched as sent; one that matches no route is a 404.
    app.url_map.merge_slashes = False
    app.before_request(check_body)
    apidoc.path_parameter(app, "key", KEY_SCHEMA)

    @app.errorhandler(RequestSchemaValidationError)
    async def invalid_request(exc: RequestSchemaValidationError) -> Any:
        code = "invalid_query" if isinstance(exc, QuerystringValidationError) else "invalid_body"
        return error_response(400, code, _describe(exc.validation_error))
