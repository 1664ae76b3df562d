"""Property-based fuzzing of every route, in process, on memory, SQLite and Redis.

Each example is one request built by hypothesis and sent through ASGI exactly
as a server would hand it over (:mod:`tests.hostile`). Two kinds are built:

- **routed**: a route of the API table with a method (its own or another),
  a path parameter, a query and a body, each drawn either from what the HTTP API
  allows or from hostile input (percent-encoding, separators, unicode,
  control characters, very long keys, wrong content types, malformed or
  deep or huge or oversized JSON, wrong-typed credentials). Its label says
  whether it is **valid**: its method is one of the route's (HEAD for a
  GET route), its path parameter obeys the API's limits after the path is
  percent-decoded, its query does, and its body does: absent or at most
  64 KiB; declared JSON (``application/json`` or ``application/*+json``)
  on POST/PUT/PATCH/DELETE; strict JSON when declared JSON; and the
  route's body model (any JSON value for ``PUT /cache``, exact credentials
  for register and login). The cookie never counts: a bad one is a new
  client, never an error; but a junk ``Origin`` on a state-changing route
  is the cross-site check's 403 when any session cookie comes with it.
- **free-form**: any method token, any target (random text, absolute form,
  ``*``), any headers (bogus lengths, random content types, junk cookies)
  and any bytes. Its validity is not judged; it must only be answered.

Properties, checked on every example: no 5xx; every 4xx is a JSON error in
the project's shape; a request labelled invalid gets a 4xx; a valid one is
never refused as bad input (400/405/413/415); and the stored data, read
straight from the backend before and after (:func:`tests.storedump.snapshot`),
changes only through a valid request: never through an invalid one, never
through one answered with an error.
"""

from __future__ import annotations

import itertools
import json
import string
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer
from quart import Quart

from qapp.ext import StoreSessionInterface, sessions
from tests.hostile import (
    MAX_BODY,
    STATE_CHANGING,
    STRATEGIES,
    Raw,
    call,
    credentials_ok,
    encode_segment,
    is_json_type,
    key_ok,
    strict_json_ok,
)
from tests.storedump import cookie_of, snapshot

#: Examples per backend. Fixed, with derandomize, so CI runs the same cases each time.
EXAMPLES = 600

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        # One app per backend serves every example, on purpose: state accumulates.
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@dataclass(frozen=True)
class Route:
    """One route of the API table: its path, methods, parameter and body."""

    template: str
    methods: frozenset[str]
    param: str | None = None
    #: The method that takes a body, and the body's model ("any" or "credentials").
    body: tuple[str, str] | None = None
    #: The method that takes a ``ttl`` query.
    ttl: str | None = None


def _r(template: str, *methods: str, **kw: Any) -> Route:
    return Route(template, frozenset(methods), **kw)


ROUTES = [
    _r("/", "GET"),
    _r("/health", "GET"),
    _r("/openapi.json", "GET"),
    _r("/docs", "GET"),
    _r("/static/{file}", "GET", param="file"),
    _r("/counter/{strategy}", "GET", "POST", "DELETE", param="strategy"),
    _r("/session/counter", "GET"),
    _r("/session/counter/inc", "POST"),
    _r("/session/counter/dec", "POST"),
    _r("/session/counter/reset", "POST"),
    _r("/cache/{key}", "GET", "PUT", "DELETE", param="key", body=("PUT", "any"), ttl="PUT"),
    _r("/memo/{key}", "GET", param="key"),
    _r("/auth/register", "POST", body=("POST", "credentials")),
    _r("/auth/login", "POST", body=("POST", "credentials")),
    _r("/auth/logout", "POST"),
    _r("/auth/me", "GET"),
]

STATIC_FILES = ("index.html", "page.css", "page.js")
STANDARD_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
ODD_METHODS = ["OPTIONS", "TRACE", "CONNECT", "PROPFIND", "get", "Post", "FOO", "G"]
JSON_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/vnd.qapp+json",
    "Application/JSON",
]
OTHER_TYPES = [
    "text/plain",
    "text/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/jsonp",
    "application/octet-stream",
    "",
]
#: Characters that look like a key's separators or like ASCII but are not.
LOOKALIKES = "／∕⁄⧸：꞉ː．․。‐‑－аеоѕ"
HOSTILE_KEY_CHARS = "/\\%?#&=+;, \t\n\r\x00\x1b\x7f'\"<>{}|^`[]~!$*()@" + LOOKALIKES
USERS = [("fuzz_ada", "analytical engine"), ("fuzz_bob", "correct horse"), ("fuzzer", "password1")]
COOKIE_KINDS = [
    "none",
    "live",
    "truncated",
    "forged",
    "cross_signed",
    "signed_unknown",
    "bare_id",
    "junk",
    "two",
]

_printable = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
_token = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)

#: JSON texts that are malformed, or that parse in Python but no store can keep.
bad_json = st.one_of(
    st.sampled_from(
        [
            b"{",
            b"[1,]",
            b"NaN",
            b"[Infinity]",
            b"-Infinity",
            b"1e400",
            b"1" + b"0" * 5000,
            b'"\\ud800"',
            b'{"\\udfff": 1}',
            b'"\xff"',
            b"1 2",
            b"{'a': 1}",
            b"\xef\xbb\xbf[]",
        ]
    ),
    st.integers(101, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.binary(min_size=1, max_size=64).filter(lambda b: not strict_json_ok(b)),
    json_values.map(lambda v: json.dumps(v).encode()[:-1]).filter(lambda b: not strict_json_ok(b)),
)

#: Bodies just over the 64 KiB limit, or far over it.
oversized = st.integers(MAX_BODY + 1, 4 * MAX_BODY).map(lambda n: b'"' + b"x" * (n - 2) + b'"')

bad_credentials = st.one_of(
    json_values,
    st.fixed_dictionaries({"username": json_values, "password": json_values}),
    st.fixed_dictionaries({"username": st.text(max_size=40), "password": st.text(max_size=140)}),
    st.sampled_from(
        [
            {"username": "ab", "password": "password1"},
            {"username": "Ada", "password": "password1"},
            {"username": "ada\n", "password": "password1"},
            {"username": "ada", "password": "short"},
            {"username": "ada", "password": "p" * 129},
            {"username": "ada", "password": 12345678},
            {"username": 123, "password": "password1"},
            {"username": "ada", "password": "password1", "admin": True},
            {"username": "ada"},
            [],
        ]
    ),
).filter(lambda v: not credentials_ok(v))


@st.composite
def segments(draw: st.DrawFn, param: str) -> str:
    """A raw (percent-encoded) path segment for ``param``, valid or hostile."""
    kind = draw(st.sampled_from(["valid", "valid", "hostile", "long", "raw", "bytes"]))
    if kind == "valid":
        if param == "strategy":
            text = draw(st.sampled_from(STRATEGIES))
        elif param == "file":
            text = draw(st.sampled_from(STATIC_FILES))
        else:
            text = draw(
                st.text(alphabet="ab:._-Z9", min_size=1, max_size=12)
                | st.sampled_from(["..", ".", "k", "a" * 200])
            )
    elif kind == "hostile":
        text = draw(
            st.text(alphabet=HOSTILE_KEY_CHARS + "ab:.", min_size=1, max_size=20)
            | st.text(max_size=20)
            | st.sampled_from(["../secret_key", "..%2F..%2Fpyproject.toml", "a\x00b", "k\n"])
        )
    elif kind == "long":
        text = "a" * draw(st.integers(201, 10_000))
    elif kind == "raw":
        # Written as is: stray '%', '%zz', literal '/' and '.' segments.
        return draw(st.text(alphabet="abk%/.:2Ffz0", min_size=1, max_size=16))
    else:
        return "".join(f"%{b:02X}" for b in draw(st.binary(min_size=1, max_size=12)))
    slash = draw(st.sampled_from(["/", "%2F", "%2f"]))
    if draw(st.booleans()):
        return encode_segment(text, slash=slash)
    # Percent-encode every character, letters too: the decoded key is the same.
    return "".join(slash if c == "/" else "".join(f"%{b:02x}" for b in c.encode()) for c in text)


def _param_ok(param: str, decoded: str) -> bool:
    if param == "strategy":
        return decoded in STRATEGIES
    if param == "file":
        return decoded in STATIC_FILES
    return key_ok(decoded)


@st.composite
def ttl_queries(draw: st.DrawFn) -> tuple[str, bool]:
    """A ``ttl`` query and whether the API allows it (long ttls only: nothing expires mid-test)."""
    if draw(st.booleans()):
        if draw(st.booleans()):
            return "", True
        ttl = draw(st.floats(60, 365 * 24 * 3600.0))
        return f"ttl={ttl!r}", True
    bad = ["0", "-1", "abc", "", "nan", "inf", "-inf", "1e400", "1e12", "true", "1&ttl=2", "0x10"]
    return "ttl=" + draw(st.sampled_from(bad)), False


@dataclass
class Case:
    """A request to send, the cookie kind to attach, and its label (None: not judged)."""

    raw: Raw
    cookie: str
    valid: bool | None
    route: str


def _frame(draw: st.DrawFn, body: bytes | None, content_type: str | None) -> Raw:
    raw = Raw("", "")
    if content_type is not None:
        raw.headers.append((b"content-type", content_type.encode("latin-1")))
    if body is not None:
        if draw(st.booleans()) or not body:
            raw.headers.append((b"content-length", str(len(body)).encode()))
            raw.chunks = [body]
        else:
            raw.headers.append((b"transfer-encoding", b"chunked"))
            cut = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
            bounds = [0, *cut, len(body)]
            raw.chunks = [body[a:b] for a, b in itertools.pairwise(bounds)]
    return raw


def _body_ok(method: str, content_type: str | None, body: bytes | None, model: str | None) -> bool:
    if body is None:
        return model is None
    if len(body) > MAX_BODY:
        return False
    if is_json_type(content_type):
        if not strict_json_ok(body):
            return False
        return model != "credentials" or credentials_ok(json.loads(body))
    return method.upper() not in STATE_CHANGING and model is None


@st.composite
def routed(draw: st.DrawFn) -> Case:
    """A request to a route of the API table, each part valid or hostile, with its label."""
    route = draw(st.sampled_from(ROUTES))
    own = sorted(route.methods | ({"HEAD"} if "GET" in route.methods else set()))
    wrong = st.sampled_from(STANDARD_METHODS + ODD_METHODS[1:])
    method = draw(st.one_of(st.sampled_from(own), st.sampled_from(own), wrong))
    # werkzeug reads a method in capitals ("post" is POST), everywhere alike.
    canonical = method.upper()
    ok = canonical in own
    target = route.template
    if route.param is not None:
        segment = draw(segments(route.param))
        target = target.replace("{" + route.param + "}", segment)
        # Judged on the path as the server decodes it.
        ok = ok and _param_ok(route.param, unquote(segment))
    if route.ttl == canonical:
        query, query_ok = draw(ttl_queries())
        ok = ok and query_ok
    else:
        query = draw(st.sampled_from(["", "ttl=abc", "x=1", "a=%ff&b"]))
    target += f"?{query}" if query else ""
    model = route.body[1] if route.body and route.body[0] == canonical else None
    kind = draw(
        st.sampled_from(["good", "good", "none", "bad_json", "other_type", "oversized", "creds"])
    )
    body: bytes | None
    content_type: str | None = draw(st.sampled_from(JSON_TYPES))
    if kind == "good":
        value = (
            draw(json_values)
            if model != "credentials"
            else dict(zip(("username", "password"), draw(st.sampled_from(USERS)), strict=True))
        )
        body = json.dumps(value).encode()
    elif kind == "none":
        body, content_type = None, draw(st.sampled_from([None, *JSON_TYPES, *OTHER_TYPES]))
    elif kind == "bad_json":
        body = draw(bad_json)
    elif kind == "other_type":
        content_type = draw(st.sampled_from(OTHER_TYPES) | st.text(_printable, max_size=30))
        body = draw(st.binary(min_size=1, max_size=200))
    elif kind == "oversized":
        body = draw(oversized)
    else:
        body = json.dumps(draw(bad_credentials)).encode()
    raw = _frame(draw, body, content_type)
    raw.method, raw.target = method, target
    ok = ok and _body_ok(method, content_type, body, model)
    raw.headers += draw(junk_headers)
    cookie = draw(st.sampled_from(COOKIE_KINDS))
    origin = any(name == b"origin" for name, _ in raw.headers)
    if canonical in STATE_CHANGING and origin and cookie != "none":
        # A junk Origin names another site (or none, or is malformed), and
        # every cookie kind but "none" is sent as the session cookie: a
        # state-changing request from another site with the session cookie
        # is refused with a 403, whatever it holds. Without the cookie it is
        # judged like any other request.
        ok = False
    return Case(raw, cookie, ok, route.template)


junk_headers = st.lists(
    st.tuples(
        st.sampled_from([b"x-junk", b"accept", b"user-agent", b"x-forwarded-for", b"origin"])
        | _token.map(lambda t: ("x-" + t).lower().encode()),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40).map(
            lambda t: t.encode("latin-1")
        ),
    ),
    max_size=3,
)


@st.composite
def free_form(draw: st.DrawFn) -> Case:
    """Any method, target, headers and body: not judged, only answered."""
    method = draw(st.sampled_from(STANDARD_METHODS + ODD_METHODS) | _token)
    target = draw(
        st.text(_printable, max_size=60).map(lambda t: "/" + t)
        | st.sampled_from(["*", "http://evil.test/cache/k", "//cache/k", "/cache//k", "/./health"])
        | st.sampled_from(ROUTES).map(lambda r: r.template.replace("{", "").replace("}", ""))
    )
    if "#" in target:
        target = target.split("#", 1)[0] or "/"
    headers = draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [b"content-type", b"content-length", b"transfer-encoding", b"cookie"]
                )
                | _token.map(lambda t: t.lower().encode()),
                st.text(_printable, max_size=40).map(str.encode)
                | st.sampled_from([b"-1", b"abc", b"99999999999999999999", b"0", b"chunked"]),
            ),
            max_size=5,
        )
    )
    body = draw(
        st.binary(max_size=300) | bad_json | json_values.map(lambda v: json.dumps(v).encode())
    )
    return Case(
        Raw(method, target, headers, [body]), draw(st.sampled_from(COOKIE_KINDS)), None, "*"
    )


cases = st.one_of(routed(), routed(), routed(), free_form())


class Fuzz:
    """One started app per backend, a logged-in cookie and the other cookie kinds."""

    def __init__(self, app: Quart, cookies: dict[str, bytes | None]) -> None:
        self.app = app
        self.cookies = cookies
        self.tried = 0
        self.labels: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()


@pytest.fixture
async def fuzz(app: Quart, client: httpx.AsyncClient) -> AsyncIterator[Fuzz]:
    """The app started, with a registered user and a live logged-in cookie to fuzz with."""
    app.config["QAPP_MEMO_WORK"] = 0.0  # the simulated work adds nothing to a fuzz case
    name, password = USERS[0]
    await client.post("/auth/register", json={"username": name, "password": password})
    response = await client.post("/auth/login", json={"username": name, "password": password})
    live = cookie_of(response)
    assert live is not None
    await client.post("/session/counter/inc")
    interface = app.session_interface
    assert isinstance(interface, StoreSessionInterface)
    sid = interface.serializer(app).loads(live)
    other_key = URLSafeSerializer("another secret", salt=sessions.SALT)
    cookies: dict[str, bytes | None] = {
        "none": None,
        "live": live.encode(),
        "truncated": live[:-5].encode(),
        "forged": b"InAtbWFkZS11cC1pZCI.bm90LWEtc2lnbmF0dXJl",
        "cross_signed": other_key.dumps(sid).encode(),
        "signed_unknown": interface.serializer(app).dumps("u" * 43).encode(),
        "bare_id": sid.encode(),
        "junk": b"\xff\xfe; ;;=;session",
        "two": b"x; session=" + live.encode(),
    }
    state = Fuzz(app, cookies)
    yield state
    # The figures the README quotes; the run must really have tried them all.
    scheme = app.extensions["qapp"].settings.urls["default"].split(":")[0]
    print(
        f"\nfuzz {scheme}: {state.tried} cases, "
        f"{dict(state.labels)}, statuses {dict(sorted(state.statuses.items()))}"
    )
    assert state.tried >= EXAMPLES
    assert min(state.labels[k] for k in ("valid", "invalid", "free-form")) >= EXAMPLES // 10
    # Every kind of answer was reached, not only the easy ones.
    assert {200, 204, 400, 404, 405, 413, 415} <= set(state.statuses)


def _assert_error_shape(case: Case, status: int, content_type: str | None, body: bytes) -> None:
    assert content_type == "application/json", (case, status, body[:200])
    error = json.loads(body)
    assert set(error) == {"error", "message"}, error
    assert isinstance(error["error"], str)
    assert isinstance(error["message"], str)
    assert error["message"]


@pytest.mark.limits_off  # hundreds of new sessions from one address: past the quota
@FUZZ_SETTINGS
@given(case=cases)
async def test_fuzz_every_route(fuzz: Fuzz, case: Case) -> None:
    """Random and hostile requests: no 5xx, JSON 4xx, stored data changed only by valid ones."""
    raw = case.raw
    cookie = fuzz.cookies[case.cookie]
    if cookie is not None:
        raw.headers.append((b"cookie", b"session=" + cookie))
    before = await snapshot(fuzz.app)
    answer = await call(fuzz.app, raw)
    after = await snapshot(fuzz.app)
    fuzz.tried += 1
    fuzz.labels[{True: "valid", False: "invalid", None: "free-form"}[case.valid]] += 1
    fuzz.statuses[answer.status] += 1

    assert 200 <= answer.status < 500, (case, answer.status, answer.body[:300])
    if answer.status >= 400 and raw.method != "HEAD":
        _assert_error_shape(case, answer.status, answer.header("content-type"), answer.body)
    if case.valid is False:
        assert answer.status >= 400, (case, answer.status, answer.body[:300])
    if case.valid is True:
        assert answer.status not in {400, 405, 413, 415}, (case, answer.status, answer.body[:300])
    if answer.status >= 400 or case.valid is False:
        assert after == before, (case, answer.status)
