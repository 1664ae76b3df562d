"""The cross-site check: unsafe requests with the session cookie must come from a trusted origin.

In process through Quart's test client and httpx (:mod:`tests.appclients`),
on the small app of :mod:`tests.user_app`; and against that app under real
hypercorn workers, where a malformed ``Origin`` must be a JSON 403, never a
500 or a traceback in the log.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart

from qapp.ext.origin import Origin, parse_origin, trusted_origins
from qapp.state import ConfigurationError
from qapp.testing import HypercornServer
from tests.appclients import CLIENT_KINDS, Send, sender, session_cookie
from tests.user_app import create_app

ROOT = Path(__file__).resolve().parents[1]

#: Origins a browser never sends, each a 403 and never a 500.
MALFORMED = [
    "http://[",
    "http://a:99999",
    "ftp//x",
    "http://a:",
    "http://a/path",
    "http://user@a",
    "http://exa mple",
    "http://[::1",
    "http://[1.2.3.4]",
    "http://999.1.1.1",
    "://a",
    "http://",
    "http://a:-1",
    "http://\u00e9.example",
]

#: Origins other than the app's own, and not trusted: a 403 with the cookie.
FOREIGN = [
    "http://evil.example",
    "https://app.example",  # another scheme
    "http://app.example:8080",  # another port
    "http://sub.app.example",  # another host, if the same site
    "https://partner.example:8443",  # a trusted host on another port
]


def settings(tmp_path: Path, **more: Any) -> dict[str, Any]:
    """The app's settings: a SQLite file of its own and a fixed key."""
    return {
        "QAPP_STORE_URL": f"sqlite://{tmp_path / 'qapp.db'}",
        "QAPP_SECRET_KEY": secrets.token_urlsafe(32),
        "QAPP_TRUSTED_ORIGINS": "https://partner.example, http://[2001:db8::1]:8080",
        **more,
    }


@pytest.fixture
async def user_app(tmp_path: Path) -> AsyncIterator[Quart]:
    """The user app, started, trusting two origins besides its own."""
    app = create_app(tmp_path / "instance", settings(tmp_path))
    async with app.test_app():
        yield app


@pytest.fixture(params=CLIENT_KINDS)
def send(request: pytest.FixtureRequest, user_app: Quart) -> Send:
    """Requests through the user app, by Quart's test client and by httpx in turn."""
    return sender(user_app, request.param)


async def logged_in(send: Send) -> tuple[str, str]:
    """A fresh session's ``Cookie`` header."""
    answer = await send("POST", "/login")
    assert answer.status == 200
    return session_cookie(answer)


def assert_refused(answer: Any) -> None:
    """``answer`` is the check's JSON 403."""
    assert answer.status == 403, answer
    assert answer.json["error"] == "cross_site_request", answer.json
    assert answer.json["message"], answer.json


async def test_a_cookieless_cross_origin_api_call_goes_through(send: Send) -> None:
    """A POST without the session cookie from another origin reaches the route and its CORS."""
    for headers in (
        [("Origin", "https://other.example")],
        [("Origin", "https://other.example"), ("Sec-Fetch-Site", "cross-site")],
        [("Origin", "null")],
        [("Cookie", "theme=dark"), ("Origin", "https://other.example")],
    ):
        answer = await send("POST", "/api/items", headers)
        assert answer.status == 200, (headers, answer)
        assert answer.json == {"created": True}
        assert answer.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("origin", FOREIGN)
async def test_a_cross_site_post_with_the_session_cookie_is_refused(
    send: Send, origin: str
) -> None:
    """With the session cookie, an Origin that is neither the app's nor trusted gets the 403."""
    cookie = await logged_in(send)
    assert_refused(await send("POST", "/change", [cookie, ("Origin", origin)]))
    assert_refused(
        await send("POST", "/change", [cookie, ("Origin", origin), ("Sec-Fetch-Site", "same-site")])
    )


async def test_sec_fetch_site_cross_or_same_site_needs_a_trusted_origin(send: Send) -> None:
    """Sec-Fetch-Site same-site or cross-site is refused, unless a trusted Origin comes with it."""
    cookie = await logged_in(send)
    for site in ("cross-site", "same-site", "something-else"):
        assert_refused(await send("POST", "/change", [cookie, ("Sec-Fetch-Site", site)]))
        trusted = [cookie, ("Sec-Fetch-Site", site), ("Origin", "https://partner.example")]
        assert (await send("POST", "/change", trusted)).status == 200


async def test_same_origin_and_none_pass(send: Send) -> None:
    """Sec-Fetch-Site same-origin or none passes with the session cookie, whatever Origin says."""
    cookie = await logged_in(send)
    for site in ("same-origin", "none", " Same-Origin "):
        for extra in ([], [("Origin", "http://evil.example")]):
            answer = await send("POST", "/change", [cookie, ("Sec-Fetch-Site", site), *extra])
            assert answer.status == 200, (site, extra, answer)
            assert answer.json == {"changed": True, "user": "ada"}


async def test_the_apps_own_origin_passes_with_ports_and_case_normalised(send: Send) -> None:
    """The request's own scheme and Host pass however the port and case are written."""
    cookie = await logged_in(send)
    cases = [
        ("app.example", "http://app.example"),
        ("app.example", "http://APP.example:80"),
        ("App.Example:80", "HTTP://app.example"),
        ("app.example:8000", "http://app.example:8000"),
        ("[2001:db8:0::1]:8000", "http://[2001:DB8::1]:8000"),
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
    ]
    for host, origin in cases:
        answer = await send("POST", "/change", [cookie, ("Host", host), ("Origin", origin)])
        assert answer.status == 200, (host, origin, answer)


async def test_trusted_origins_pass(send: Send) -> None:
    """Each QAPP_TRUSTED_ORIGINS entry passes, its default port and an IPv6 literal normalised."""
    cookie = await logged_in(send)
    for origin in (
        "https://partner.example",
        "https://PARTNER.example:443",
        "http://[2001:db8:0:0::1]:8080",
    ):
        answer = await send("POST", "/change", [cookie, ("Origin", origin)])
        assert answer.status == 200, (origin, answer)


async def test_null_and_several_origins_are_refused(send: Send) -> None:
    """Origin: null and a request with two Origin headers are refused with the cookie."""
    cookie = await logged_in(send)
    assert_refused(await send("POST", "/change", [cookie, ("Origin", "null")]))
    two = [cookie, ("Origin", "http://app.example"), ("Origin", "http://app.example")]
    assert_refused(await send("POST", "/change", two))


@pytest.mark.parametrize("origin", MALFORMED)
async def test_a_malformed_origin_is_a_json_403_and_logs_nothing(
    send: Send, origin: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed Origin with the cookie is the JSON 403, with no error logged."""
    cookie = await logged_in(send)
    with caplog.at_level(logging.WARNING):
        answer = await send("POST", "/change", [cookie, ("Origin", origin)])
    assert_refused(answer)
    assert answer.json["message"] == "the Origin header is malformed"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_exempt_routes_take_cross_site_posts_with_the_cookie(send: Send) -> None:
    """Routes marked cross_site_exempt (below or above @app.post) pass; others stay refused."""
    cookie = await logged_in(send)
    form_post = [cookie, ("Origin", "https://idp.example"), ("Sec-Fetch-Site", "cross-site")]
    answer = await send("POST", "/oidc/callback", form_post)
    assert (answer.status, answer.json) == (200, {"signed_in": True, "user": "ada"})
    assert (await send("POST", "/saml/acs", form_post)).status == 200
    assert_refused(await send("POST", "/change", form_post))


async def test_safe_methods_are_never_checked(send: Send) -> None:
    """A GET with the cookie from another site is answered as usual."""
    cookie = await logged_in(send)
    headers = [cookie, ("Origin", "http://evil.example"), ("Sec-Fetch-Site", "cross-site")]
    assert (await send("GET", "/whoami", headers)).status == 200


async def test_a_request_with_neither_header_passes(send: Send) -> None:
    """With the cookie but neither Sec-Fetch-Site nor Origin (not a browser's) a POST passes."""
    cookie = await logged_in(send)
    assert (await send("POST", "/change", [cookie])).status == 200


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_the_session_cookie_is_the_one_the_app_names(tmp_path: Path, kind: str) -> None:
    """With SESSION_COOKIE_NAME=sid, a cookie called session is not checked and sid is."""
    app = create_app(tmp_path, settings(tmp_path, SESSION_COOKIE_NAME="sid"))
    async with app.test_app():
        send = sender(app, kind)
        cookie = session_cookie(await send("POST", "/login"), "sid")
        evil = ("Origin", "http://evil.example")
        assert (await send("POST", "/change", [("Cookie", "session=x"), evil])).status == 200
        assert_refused(await send("POST", "/change", [cookie, evil]))


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_quarts_own_cookie_sessions_are_guarded_too(tmp_path: Path, kind: str) -> None:
    """With QAPP_SESSIONS off, Quart's own session cookie triggers the same check."""
    app = create_app(tmp_path, settings(tmp_path, QAPP_SESSIONS=False, SECRET_KEY="k" * 40))
    async with app.test_app():
        send = sender(app, kind)
        cookie = session_cookie(await send("POST", "/login"))
        assert_refused(await send("POST", "/change", [cookie, ("Origin", "http://evil.example")]))
        assert (await send("POST", "/change", [cookie])).status == 200


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_server_name_and_preferred_scheme_are_own_origins(tmp_path: Path, kind: str) -> None:
    """Behind a TLS proxy, SERVER_NAME with PREFERRED_URL_SCHEME https is the app's own origin."""
    config = settings(tmp_path, SERVER_NAME="app.example", PREFERRED_URL_SCHEME="https")
    app = create_app(tmp_path, config)
    async with app.test_app():
        send = sender(app, kind)
        cookie = await logged_in(send)
        ok = await send("POST", "/change", [cookie, ("Origin", "https://app.example")])
        assert ok.status == 200, ok
        assert_refused(await send("POST", "/change", [cookie, ("Origin", "https://evil.example")]))


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_the_check_can_be_turned_off(tmp_path: Path, kind: str) -> None:
    """With QAPP_CROSS_SITE_CHECK=0 a cross-site POST with the cookie is answered as usual."""
    app = create_app(tmp_path, settings(tmp_path, QAPP_CROSS_SITE_CHECK="0"))
    async with app.test_app():
        send = sender(app, kind)
        cookie = await logged_in(send)
        assert (await send("POST", "/change", [cookie, ("Origin", "null")])).status == 200


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("http://Example.COM", Origin("http", "example.com", 80)),
        ("https://example.com:443", Origin("https", "example.com", 443)),
        ("http://example.com:8080", Origin("http", "example.com", 8080)),
        ("http://[::FFFF:1.2.3.4]", Origin("http", "::ffff:102:304", 80)),
        ("http://[2001:DB8:0:0::1]:80", Origin("http", "2001:db8::1", 80)),
        ("http://127.0.0.1:8000", Origin("http", "127.0.0.1", 8000)),
        ("app://local", Origin("app", "local", None)),
    ],
)
def test_origins_parse_to_scheme_host_and_port(text: str, origin: Origin) -> None:
    """An origin reads as (scheme, host, port): lowercased, default port set, IPv6 compressed."""
    assert parse_origin(text) == origin


# The Kelvin sign lowercases to "k": no header brings it (it is not Latin-1), a setting may.
@pytest.mark.parametrize("text", [*MALFORMED, "http://\u212a.example", "\u212attp://a.example"])
def test_malformed_origins_do_not_parse(text: str) -> None:
    """Each malformed origin is a ValueError from the parser."""
    with pytest.raises(ValueError, match=r"origin|address|host|port"):
        parse_origin(text)


def test_trusted_origins_are_a_list_or_a_separated_string() -> None:
    """QAPP_TRUSTED_ORIGINS reads from a list or a comma- or space-separated string alike."""
    expected = {Origin("https", "a.example", 443), Origin("http", "b.example", 8080)}
    assert trusted_origins(["https://a.example", "http://b.example:8080"]) == expected
    assert trusted_origins("https://a.example, http://b.example:8080") == expected
    assert trusted_origins(" https://a.example  http://b.example:8080 ") == expected
    assert trusted_origins(None) == frozenset()


@pytest.mark.parametrize(
    "value", ["https://a.example/", "a.example", "https://a.example, http://[", ["https://*.a"]]
)
@pytest.mark.parametrize("check", ["1", "0"])
def test_a_bad_trusted_origin_fails_at_startup(tmp_path: Path, value: object, check: str) -> None:
    """A malformed QAPP_TRUSTED_ORIGINS entry is a ConfigurationError at init, check on or off."""
    config = settings(tmp_path, QAPP_TRUSTED_ORIGINS=value, QAPP_CROSS_SITE_CHECK=check)
    with pytest.raises(ConfigurationError, match="QAPP_TRUSTED_ORIGINS"):
        create_app(tmp_path, config)


# Against real hypercorn workers.


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypercornServer]:
    """The user app under 2 real hypercorn workers, on a SQLite file of its own."""
    folder = tmp_path_factory.mktemp("origin")
    env = {
        "QAPP_INSTANCE_PATH": str(folder),
        "QAPP_STORE_URL": f"sqlite://{folder / 'qapp.db'}",
        "QAPP_SECRET_KEY": secrets.token_urlsafe(32),
        "QAPP_TRUSTED_ORIGINS": "https://partner.example",
    }
    with HypercornServer(workers=2, env=env, app="tests.user_app_asgi:app", cwd=ROOT) as running:
        yield running


@pytest.mark.slow
def test_live_malformed_origins_are_json_403s_without_a_traceback(server: HypercornServer) -> None:
    """Under hypercorn a malformed Origin with the cookie is the JSON 403; the log has no error."""
    start = server.log_path.stat().st_size
    with httpx.Client(base_url=server.url) as client:
        login = client.post("/login")
        assert login.status_code == 200
        for origin in MALFORMED:
            answer = client.post("/change", headers={b"Origin": origin.encode("latin-1")})
            assert answer.status_code == 403, (origin, answer.text)
            assert answer.json()["message"] == "the Origin header is malformed"
        assert client.post("/change").json() == {"changed": True, "user": "ada"}
    log = server.log_path.read_bytes()[start:]
    assert b"Traceback" not in log
    assert b"ERROR" not in log
    assert b" 500 " not in log


@pytest.mark.slow
def test_live_cookieless_api_calls_and_exempt_callbacks_pass(server: HypercornServer) -> None:
    """Under hypercorn a cookieless cross-origin POST and an exempt callback pass; /change not."""
    cross = {"Origin": "https://other.example", "Sec-Fetch-Site": "cross-site"}
    with httpx.Client(base_url=server.url) as client:
        api = client.post("/api/items", headers=cross)
        assert (api.status_code, api.json()) == (200, {"created": True})
        assert client.post("/login").status_code == 200
        assert client.post("/oidc/callback", headers=cross).json()["user"] == "ada"
        refused = client.post("/change", headers=cross)
        assert (refused.status_code, refused.json()["error"]) == (403, "cross_site_request")
        trusted = {"Origin": "https://partner.example", "Sec-Fetch-Site": "same-site"}
        assert client.post("/change", headers=trusted).status_code == 200
