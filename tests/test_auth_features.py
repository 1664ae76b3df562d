"""Logins as Flask-Login and quart-auth users expect them: typed ids, remember-me, fresh
logins, logging out everywhere, a login page for browsers and bearer tokens.

Every test runs the small app of :mod:`tests.auth_app` on each store in turn
(memory, SQLite, Redis, PostgreSQL), in process; one runs it under 2 real
hypercorn workers on SQLite.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart
from quart.testing import WebsocketResponseError
from quart.testing.app import LifespanError

from qapp.ext import StoreSessionInterface, login_user, state_of
from qapp.ext.login_view import is_local_path
from qapp.ext.sessions import RENEW_EVERY
from qapp.testing import HypercornServer
from tests.auth_app import create_app
from tests.storedump import assert_json_error, cookie_of

ROOT = Path(__file__).resolve().parent.parent
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
TTL = 3600


def make_app(store_url: str, tmp_path: Path, **config: Any) -> Quart:
    """The auth app on ``store_url``, sessions of an hour, no session quota."""
    settings: dict[str, Any] = {
        "QAPP_STORE_URL": store_url,
        "QAPP_SESSION_QUOTA": "off",
        "QAPP_SESSION_TTL": TTL,
        "QAPP_LOGIN_VIEW": "login_page",
        "SECRET_KEY": secrets.token_urlsafe(32),
    }
    settings.update(config)
    return create_app(tmp_path / "instance", settings)


@pytest.fixture
async def app(store_url: str, tmp_path: Path) -> AsyncIterator[Quart]:
    """The auth app on each store, its stores connected."""
    made = make_app(store_url, tmp_path)
    async with made.test_app():
        yield made


def client_of(app: Quart) -> httpx.AsyncClient:
    """A new httpx client (a new browser) of ``app``, in process."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://auth.test")


@pytest.fixture
async def client(app: Quart) -> AsyncIterator[httpx.AsyncClient]:
    """One browser of the app."""
    async with client_of(app) as c:
        yield c


def sid_of(app: Quart, cookie: str) -> str:
    """The session id a cookie carries."""
    interface = app.session_interface
    assert isinstance(interface, StoreSessionInterface)
    sid: str = interface.serializer(app).loads(cookie)
    return sid


def set_cookie_header(response: httpx.Response) -> str:
    """The response's one Set-Cookie header for the session cookie."""
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith("session=")]
    assert len(headers) == 1, headers
    return headers[0]


async def login(client: httpx.AsyncClient, user_id: Any, remember: bool = False) -> str:
    """Log ``client`` in as ``user_id``; return its new cookie."""
    response = await client.post("/login", json={"id": user_id, "remember": remember})
    assert response.status_code == 200, response.text
    cookie = cookie_of(response)
    assert cookie is not None
    return cookie


# 1. User ids keep their type.


async def test_ids_come_back_to_the_loader_with_their_type(client: httpx.AsyncClient) -> None:
    """A str or int id given to login_user reaches the loader on later requests as that type."""
    for user_id in [7, "7", "ada", 2**53 + 1, 0, ""]:
        client.cookies.clear()
        await login(client, user_id)
        answer = await client.get("/me")
        assert answer.status_code == 200, answer.text
        assert answer.json()["user"] == {"id": user_id, "type": type(user_id).__name__}


async def test_other_id_types_are_refused_at_once(app: Quart) -> None:
    """login_user refuses a bool, float, None, list or dict id with a TypeError naming the type."""
    bad: list[Any] = [True, 1.5, None, [1], {"id": 1}]
    async with app.test_request_context("/login", method="POST"):
        for user_id in bad:
            with pytest.raises(TypeError, match=type(user_id).__name__):
                await login_user(user_id)


async def test_quart_test_client_logs_in_with_an_int_id(app: Quart) -> None:
    """Under Quart's own test client, an int id logs in and comes back an int."""
    test_client = app.test_client()
    response = await test_client.post("/login", json={"id": 42})
    assert response.status_code == 200
    me = await test_client.get("/me")
    assert (await me.get_json())["user"] == {"id": 42, "type": "int"}


# 2. Remember me.


async def test_remembered_login_sets_a_persistent_cookie(client: httpx.AsyncClient) -> None:
    """remember=True gives the cookie Expires and Max-Age of the session's ttl."""
    response = await client.post("/login", json={"id": "ada", "remember": True})
    header = set_cookie_header(response)
    assert f"Max-Age={TTL}" in header
    assert "Expires=" in header


async def test_plain_login_keeps_a_browser_session_cookie(client: httpx.AsyncClient) -> None:
    """Without remember the cookie has neither Expires nor Max-Age: it ends with the browser."""
    response = await client.post("/login", json={"id": "ada"})
    header = set_cookie_header(response)
    assert "Max-Age" not in header
    assert "Expires" not in header


async def test_remembered_cookie_is_reissued_when_the_ttl_is_renewed(
    app: Quart, client: httpx.AsyncClient
) -> None:
    """A remembered cookie is set again, same id and a full Max-Age, exactly when the ttl renews."""
    cookie = await login(client, "ada", remember=True)
    # The worker renews a session on the first request it sees it with ...
    assert cookie_of(await client.get("/me")) is not None
    # ... then not again within a tenth of the ttl: no new cookie either.
    assert cookie_of(await client.get("/me")) is None
    # What a tenth of the ttl later looks like to this worker: its renewal is due.
    state_of(app).renewals.clear()
    renewed = await client.get("/me")
    header = set_cookie_header(renewed)
    assert f"Max-Age={TTL}" in header
    assert cookie_of(renewed) is not None
    assert sid_of(app, cookie_of(renewed) or "") == sid_of(app, cookie)
    assert cookie_of(await client.get("/me")) is None
    assert RENEW_EVERY <= 0.1


async def test_plain_cookie_is_not_reissued_on_renewal(
    app: Quart, client: httpx.AsyncClient
) -> None:
    """A browser-session cookie is not set again when the store ttl renews."""
    await login(client, "ada")
    state_of(app).renewals.clear()
    response = await client.get("/me")
    assert response.status_code == 200
    assert cookie_of(response) is None


async def test_quart_test_client_gets_the_remembered_cookie(app: Quart) -> None:
    """Under Quart's own test client, remember=True sets Max-Age and the login holds."""
    test_client = app.test_client()
    response = await test_client.post("/login", json={"id": "ada", "remember": True})
    assert f"Max-Age={TTL}" in response.headers["Set-Cookie"]
    assert (await (await test_client.get("/me")).get_json())["user"]["id"] == "ada"


async def test_remembered_cookie_survives_a_browser_restart(
    app: Quart, client: httpx.AsyncClient
) -> None:
    """A second client holding only the remembered cookie is logged in as the same user."""
    cookie = await login(client, 7, remember=True)
    async with client_of(app) as restarted:
        restarted.cookies.set("session", cookie)
        answer = await restarted.get("/me")
    assert answer.json()["user"] == {"id": 7, "type": "int"}


# 3. Fresh logins.


async def age_login(app: Quart, cookie: str, seconds: float) -> None:
    """Move the session's login time ``seconds`` into the past, in the store itself."""
    store = state_of(app).store("session").namespace("session")
    sid = sid_of(app, cookie)
    data = await store.get(sid)
    assert isinstance(data, dict)
    data["_login_at"] = float(data["_login_at"]) - seconds
    await store.set(sid, data, ttl=TTL)


async def test_a_new_login_is_fresh(client: httpx.AsyncClient) -> None:
    """Right after login_user, a fresh_login_required route lets the user through."""
    await login(client, "ada")
    answer = await client.post("/password")
    assert answer.status_code == 200, answer.text


async def test_an_old_login_is_not_fresh(app: Quart, client: httpx.AsyncClient) -> None:
    """Past QAPP_FRESH_LOGIN_TTL, fresh_login_required answers 401 fresh_login_required JSON."""
    cookie = await login(client, "ada")
    await age_login(app, cookie, 601)
    assert_json_error(await client.post("/password"), 401, "fresh_login_required")
    assert (await client.get("/me")).status_code == 200
    await login(client, "ada")
    assert (await client.post("/password")).status_code == 200


async def test_a_restored_remembered_session_is_not_fresh(
    app: Quart, client: httpx.AsyncClient
) -> None:
    """A remembered cookie brought back later logs the user in, but not freshly."""
    cookie = await login(client, "ada", remember=True)
    await age_login(app, cookie, 3 * 24 * 3600)
    async with client_of(app) as restarted:
        restarted.cookies.set("session", cookie)
        assert (await restarted.get("/me")).status_code == 200
        assert_json_error(await restarted.post("/password"), 401, "fresh_login_required")


async def test_fresh_login_ttl_is_a_setting(store_url: str, tmp_path: Path) -> None:
    """QAPP_FRESH_LOGIN_TTL sets how long a login stays fresh."""
    app = make_app(store_url, tmp_path, QAPP_FRESH_LOGIN_TTL="7200")
    async with app.test_app(), client_of(app) as client:
        cookie = await login(client, "ada")
        await age_login(app, cookie, 3600)
        assert (await client.post("/password")).status_code == 200
        await age_login(app, cookie, 3601)
        assert_json_error(await client.post("/password"), 401, "fresh_login_required")


async def test_fresh_login_required_redirects_a_browser(
    app: Quart, client: httpx.AsyncClient
) -> None:
    """A browser whose login is not fresh is sent to the login page, next= the page."""
    cookie = await login(client, "ada")
    await age_login(app, cookie, 601)
    answer = await client.post("/password", headers=HTML)
    assert answer.status_code == 302
    assert answer.headers["location"] == "/login-page?next=%2Fpassword"


# 4. Logging out everywhere.


async def test_logout_everywhere_ends_every_session_of_the_user(app: Quart) -> None:
    """logout_everywhere ends the user's sessions on 3 clients and leaves other users' alone."""
    clients = [client_of(app) for _ in range(4)]
    try:
        for i, c in enumerate(clients[:3]):
            await login(c, 7, remember=i == 0)
        await login(clients[3], "7")  # another user: "7" is not 7
        for c in clients:
            assert (await c.get("/me")).status_code == 200
        assert (await clients[0].post("/logout-everywhere")).status_code == 200
        for c in clients[:3]:
            assert_json_error(await c.get("/me"), 401, "unauthorized")
            assert (await c.get("/whoami")).json() == {"user": None}
        assert (await clients[3].get("/me")).json()["user"] == {"id": "7", "type": "str"}
        # The user may log in again, and that session is good.
        await login(clients[1], 7)
        assert (await clients[1].get("/me")).status_code == 200
    finally:
        for c in clients:
            await c.aclose()


async def test_logged_out_sessions_are_deleted_from_the_store(
    app: Quart, client: httpx.AsyncClient
) -> None:
    """A session ended by logout_everywhere is deleted from the store on its next request."""
    cookie = await login(client, "ada")
    store = state_of(app).store("session").namespace("session")
    async with client_of(app) as other:
        await login(other, "ada")
        await other.post("/logout-everywhere")
    assert await store.get(sid_of(app, cookie)) is not None
    assert (await client.get("/me")).status_code == 401
    assert await store.get(sid_of(app, cookie)) is None


# 5. A login page for browsers.


async def test_browsers_are_redirected_to_the_login_view(client: httpx.AsyncClient) -> None:
    """Accept preferring text/html gets a 302 to QAPP_LOGIN_VIEW with next= the path and query."""
    answer = await client.get("/me?tab=keys", headers=HTML)
    assert answer.status_code == 302
    assert answer.headers["location"] == "/login-page?next=%2Fme%3Ftab%3Dkeys"


async def test_api_clients_keep_the_json_401(client: httpx.AsyncClient) -> None:
    """Accept JSON, */* or nothing keeps the JSON 401."""
    for accept in ["application/json", "*/*", None]:
        headers = {} if accept is None else {"Accept": accept}
        assert_json_error(await client.get("/me", headers=headers), 401, "unauthorized")


async def test_without_a_login_view_browsers_get_the_401(store_url: str, tmp_path: Path) -> None:
    """With no QAPP_LOGIN_VIEW, a browser too gets the JSON 401."""
    app = make_app(store_url, tmp_path, QAPP_LOGIN_VIEW=None)
    async with app.test_app(), client_of(app) as client:
        assert_json_error(await client.get("/me", headers=HTML), 401, "unauthorized")


async def test_login_view_may_be_a_url(store_url: str, tmp_path: Path) -> None:
    """QAPP_LOGIN_VIEW may be a URL; next= is added to its own query."""
    app = make_app(store_url, tmp_path, QAPP_LOGIN_VIEW="https://sso.example/login?app=1")
    async with app.test_app(), client_of(app) as client:
        answer = await client.get("/me", headers=HTML)
    assert answer.headers["location"] == "https://sso.example/login?app=1&next=%2Fme"


async def test_an_unknown_login_view_fails_the_start(store_url: str, tmp_path: Path) -> None:
    """A QAPP_LOGIN_VIEW naming no endpoint stops the app at startup with a clear error."""
    app = make_app(store_url, tmp_path, QAPP_LOGIN_VIEW="log_in_page")
    with pytest.raises(LifespanError, match="QAPP_LOGIN_VIEW: no endpoint 'log_in_page'"):
        async with app.test_app():
            pass


async def test_next_is_only_ever_a_local_path(client: httpx.AsyncClient) -> None:
    """next_url() returns next= only when it is a path on this site, else the default."""
    cases = {
        "/me?x=1": "/me?x=1",
        "//evil.example/": "/",
        "/\\evil.example": "/",
        "https://evil.example/": "/",
        "/\t/evil.example": "/",
        "javascript:alert(1)": "/",
        "": "/",
    }
    for given, expected in cases.items():
        answer = await client.get("/after-login", params={"next": given})
        assert answer.json() == {"next": expected}, given
    assert is_local_path("/%2F%2Fevil.example")  # encoded slashes are a plain path here


# 6. Bearer tokens.


async def test_a_good_token_fills_g_user_without_a_cookie(client: httpx.AsyncClient) -> None:
    """Authorization: Bearer with a known token fills g.user, and no cookie is set."""
    answer = await client.get("/api/me", headers={"Authorization": "Bearer tok-ada"})
    assert answer.status_code == 200
    assert answer.json()["user"] == {"id": "ada", "type": "token"}
    assert "set-cookie" not in answer.headers


async def test_a_token_request_that_uses_the_session_sets_no_cookie(
    client: httpx.AsyncClient,
) -> None:
    """A token request whose route writes to the session still gets no cookie."""
    answer = await client.post("/visit", headers={"Authorization": "Bearer tok-ada"})
    assert answer.status_code == 200
    assert "set-cookie" not in answer.headers


async def test_bad_tokens_are_a_json_401(client: httpx.AsyncClient) -> None:
    """An unknown, malformed or empty bearer token is a JSON 401 invalid_token, never a 500."""
    for value in ["Bearer nope", "Bearer a b", "Bearer %%%", "Bearer ", "bearer x" * 600]:
        answer = await client.get("/api/me", headers={"Authorization": value})
        assert_json_error(answer, 401, "invalid_token")
        assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_a_token_is_never_a_fresh_login(client: httpx.AsyncClient) -> None:
    """A bearer token authenticates, but fresh_login_required refuses it."""
    answer = await client.post("/password", headers={"Authorization": "Bearer tok-ada"})
    assert_json_error(answer, 401, "fresh_login_required")


async def test_a_token_wins_over_a_session_cookie(client: httpx.AsyncClient) -> None:
    """With both a session cookie and a token, the token says who the user is."""
    await login(client, "grace")
    answer = await client.get("/api/me", headers={"Authorization": "Bearer tok-ada"})
    assert answer.json()["user"]["id"] == "ada"
    assert (await client.get("/me")).json()["user"]["id"] == "grace"


async def test_metrics_keeps_its_own_token(store_url: str, tmp_path: Path) -> None:
    """With a token loader, /metrics still takes QAPP_METRICS_TOKEN, not the app's tokens."""
    app = make_app(store_url, tmp_path, QAPP_METRICS="1", QAPP_METRICS_TOKEN="m" * 32)
    async with app.test_app(), client_of(app) as client:
        good = await client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 32})
        assert good.status_code == 200
        app_token = await client.get("/metrics", headers={"Authorization": "Bearer tok-ada"})
        assert_json_error(app_token, 401, "unauthorized")


# 7. Websockets.


async def test_websocket_sees_the_logged_in_user(app: Quart) -> None:
    """A websocket handler sees g.user from its handshake's cookie, and from a bearer token."""
    test_client = app.test_client()
    await test_client.post("/login", json={"id": 5})
    async with test_client.websocket("/ws") as ws:
        assert await ws.receive_json() == {"user": {"id": 5, "type": "int"}}
    async with test_client.websocket("/ws", headers={"Authorization": "Bearer tok-bo"}) as ws:
        assert await ws.receive_json() == {"user": {"id": "bo", "type": "token"}}


async def test_websocket_with_a_bad_token_is_refused(app: Quart) -> None:
    """A websocket handshake with an unknown bearer token is refused with a 401."""
    test_client = app.test_client()
    with pytest.raises(WebsocketResponseError) as refused:
        async with test_client.websocket("/ws", headers={"Authorization": "Bearer no"}) as ws:
            await ws.receive_json()
    assert refused.value.response.status_code == 401


# Under real workers.


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypercornServer]:
    """The auth app under 2 real hypercorn workers sharing one SQLite file."""
    folder = tmp_path_factory.mktemp("auth")
    env = {
        "QAPP_INSTANCE_PATH": str(folder),
        "QAPP_STORE_URL": f"sqlite://{folder / 'qapp.db'}",
        "QAPP_SECRET_KEY": secrets.token_urlsafe(32),
        "QAPP_SESSION_QUOTA": "off",
    }
    with HypercornServer(workers=2, env=env, app="tests.auth_app_asgi:app", cwd=ROOT) as running:
        yield running


def get_me(server: HypercornServer, cookie: str) -> httpx.Response:
    """GET /me with ``cookie`` on a new connection, which lands on either worker."""
    with httpx.Client(base_url=server.url, cookies={"session": cookie}) as c:
        return c.get("/me")


@pytest.mark.slow
def test_live_logout_everywhere_across_two_workers(server: HypercornServer) -> None:
    """Under 2 hypercorn workers, logout_everywhere ends the user's sessions on 3 clients."""
    cookies = []
    for _ in range(4):
        with httpx.Client(base_url=server.url) as c:
            answer = c.post("/login", json={"id": 99})
            assert answer.status_code == 200
            cookie = cookie_of(answer)
            assert cookie is not None
            cookies.append(cookie)
    # Each session is seen by both workers: new connections land on either.
    for cookie in cookies:
        for _ in range(6):
            assert get_me(server, cookie).json()["user"] == {"id": 99, "type": "int"}
    with httpx.Client(base_url=server.url, cookies={"session": cookies[3]}) as c:
        assert c.post("/logout-everywhere").status_code == 200
    for cookie in cookies[:3]:
        for _ in range(6):
            assert_json_error(get_me(server, cookie), 401, "unauthorized")
