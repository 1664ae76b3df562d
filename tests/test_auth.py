"""Auth: users created atomically, logins that leak nothing, and ``g.user`` per request."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart, Response, g
from werkzeug.security import generate_password_hash

from qapp import create_app
from qapp.ext import get_store
from qapp.testing import RedisServer
from tests.storedump import (
    assert_json_error,
    assert_refused_unchanged,
    client_with_dead_store,
    cookie_of,
    dump,
    snapshot,
)

ADA = {"username": "ada", "password": "analytical engine"}


async def _register_and_login(client: httpx.AsyncClient, creds: dict[str, str]) -> None:
    assert (await client.post("/auth/register", json=creds)).status_code == 201
    assert (await client.post("/auth/login", json=creds)).status_code == 200


async def test_register_then_login_then_me(client: httpx.AsyncClient) -> None:
    """A registered user logs in and /auth/me names them."""
    response = await client.post("/auth/register", json=ADA)
    assert response.status_code == 201
    assert response.json() == {"username": "ada"}
    response = await client.post("/auth/login", json=ADA)
    assert response.status_code == 200
    assert response.json() == {"username": "ada"}
    assert cookie_of(response) is not None
    assert (await client.get("/auth/me")).json() == {"username": "ada"}


async def test_me_without_login_is_401(client: httpx.AsyncClient) -> None:
    """/auth/me without a logged-in session is a JSON 401."""
    assert_json_error(await client.get("/auth/me"), 401, "unauthorized")


async def test_registration_does_not_log_in(client: httpx.AsyncClient) -> None:
    """Registering creates the user only; no session, no cookie."""
    response = await client.post("/auth/register", json=ADA)
    assert cookie_of(response) is None
    assert (await client.get("/auth/me")).status_code == 401


async def test_duplicate_registration_is_409(client: httpx.AsyncClient, app: Quart) -> None:
    """A taken name is a 409 and the first user's password still works."""
    await client.post("/auth/register", json=ADA)
    again = {**ADA, "password": "another one"}
    await assert_refused_unchanged(
        app, client, "POST", "/auth/register", 409, "username_taken", json=again
    )
    assert (await client.post("/auth/login", json=ADA)).status_code == 200


async def test_twenty_concurrent_registrations_one_wins(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """20 concurrent registrations of one name: one 201, nineteen 409, one stored user."""
    answers = await asyncio.gather(
        *(
            client.post("/auth/register", json={"username": "race", "password": f"password{i}"})
            for i in range(20)
        )
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [409] * 19
    winner = next(i for i, a in enumerate(answers) if a.status_code == 201)
    ok = await client.post(
        "/auth/login", json={"username": "race", "password": f"password{winner}"}
    )
    assert ok.status_code == 200


async def test_unfinished_registration_holds_the_name_but_logs_nobody_in(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """A name claimed by a registration still hashing is taken, and nobody can log in as it."""
    async with app.app_context():
        await get_store().add("user:ada", {"username": "ada"}, ttl=30)
    assert_json_error(await client.post("/auth/register", json=ADA), 409, "username_taken")
    assert_json_error(await client.post("/auth/login", json=ADA), 401, "invalid_credentials")


async def test_password_is_stored_hashed(client: httpx.AsyncClient, app: Quart) -> None:
    """The store keeps a werkzeug hash of the password, never the password."""
    await client.post("/auth/register", json=ADA)
    contents = await snapshot(app)
    raw = contents[app.extensions["qapp"].settings.urls["default"]]["user:ada"]
    assert ADA["password"] not in raw
    record = json.loads(raw)
    assert record["username"] == "ada"
    assert record["password_hash"].startswith(("scrypt:", "pbkdf2:"))


async def test_unknown_user_and_wrong_password_look_alike(client: httpx.AsyncClient) -> None:
    """Unknown user and wrong password get the same 401 status and body, and no session."""
    await client.post("/auth/register", json=ADA)
    wrong = await client.post("/auth/login", json={**ADA, "password": "not the password"})
    unknown = await client.post("/auth/login", json={**ADA, "username": "nobody"})
    assert_json_error(wrong, 401, "invalid_credentials")
    assert wrong.json() == unknown.json()
    assert cookie_of(wrong) is None
    assert cookie_of(unknown) is None
    assert (await client.get("/auth/me")).status_code == 401


async def test_logout_then_replayed_cookie_is_401(client: httpx.AsyncClient) -> None:
    """After logout the session is gone server-side: replaying the old cookie gets 401."""
    await client.post("/auth/register", json=ADA)
    cookie = cookie_of(await client.post("/auth/login", json=ADA))
    assert cookie is not None
    response = await client.post("/auth/logout")
    assert response.status_code == 204
    assert response.content == b""
    client.cookies.clear()
    client.cookies.set("session", cookie)
    assert_json_error(await client.get("/auth/me"), 401)


async def test_logout_without_session_is_204(client: httpx.AsyncClient, app: Quart) -> None:
    """Logging out with no session is harmless: 204 and nothing stored."""
    before = await snapshot(app)
    assert (await client.post("/auth/logout")).status_code == 204
    assert await snapshot(app) == before


async def test_deleted_user_is_logged_out(client: httpx.AsyncClient, app: Quart) -> None:
    """g.user is loaded from the store each request: a removed user is no longer logged in."""
    await _register_and_login(client, ADA)
    async with app.app_context():
        await get_store().delete("user:ada")
    assert (await client.get("/auth/me")).status_code == 401


async def test_login_as_another_user_replaces_the_first(client: httpx.AsyncClient) -> None:
    """Logging in again as someone else makes /auth/me name the new user."""
    bob = {"username": "bob", "password": "bob's password"}
    await _register_and_login(client, ADA)
    await _register_and_login(client, bob)
    assert (await client.get("/auth/me")).json() == {"username": "bob"}


async def test_g_does_not_leak_between_requests(app: Quart) -> None:
    """What one request puts in g is gone in the next, and in concurrent ones."""
    seen: list[Any] = []

    @app.get("/_probe/<tag>")
    async def probe(tag: str) -> dict[str, str]:
        seen.append(g.get("probe"))
        g.probe = tag
        await asyncio.sleep(0.01)  # let the other requests run in between
        assert g.probe == tag
        return {"tag": tag}

    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            await c.get("/_probe/first")
            await c.get("/_probe/second")
            await asyncio.gather(*(c.get(f"/_probe/{i}") for i in range(20)))
    assert seen == [None] * 22


async def test_g_user_is_per_request(client: httpx.AsyncClient) -> None:
    """A logged-in client's g.user never reaches a concurrent anonymous request."""
    await _register_and_login(client, ADA)
    async with httpx.AsyncClient(transport=client._transport, base_url=client.base_url) as anon:
        answers = await asyncio.gather(
            *(c.get("/auth/me") for _ in range(10) for c in (client, anon))
        )
    assert [a.status_code for a in answers] == [200, 401] * 10


VALID = {"username": "valid_name", "password": "long enough"}


BAD_BODIES: list[tuple[dict[str, Any], int, str | None]] = [
    ({"content": "{", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
    ({"content": "[]", "headers": {"content-type": "application/json"}}, 400, "invalid_body"),
    ({"content": "null", "headers": {"content-type": "application/json"}}, 400, "invalid_body"),
    ({}, 400, "invalid_body"),
    ({"json": {"username": "valid_name"}}, 400, "invalid_body"),
    ({"json": {"password": "long enough"}}, 400, "invalid_body"),
    ({"json": {**VALID, "username": 12345}}, 400, "invalid_body"),
    ({"json": {**VALID, "password": 12345678}}, 400, "invalid_body"),
    ({"json": {**VALID, "password": ["long enough"]}}, 400, "invalid_body"),
    ({"json": {**VALID, "username": "ab"}}, 400, "invalid_body"),
    ({"json": {**VALID, "username": "a" * 33}}, 400, "invalid_body"),
    ({"json": {**VALID, "username": "Upper"}}, 400, "invalid_body"),
    ({"json": {**VALID, "username": "with space"}}, 400, "invalid_body"),
    ({"json": {**VALID, "username": "valid_name\n"}}, 400, "invalid_body"),
    ({"json": {**VALID, "password": "short"}}, 400, "invalid_body"),
    ({"json": {**VALID, "password": "x" * 129}}, 400, "invalid_body"),
    ({"json": {**VALID, "admin": True}}, 400, "invalid_body"),
    ({"data": VALID}, 415, None),
    ({"content": json.dumps(VALID), "headers": {"content-type": "text/plain"}}, 415, None),
    ({"json": {**VALID, "pad": "x" * 70_000}}, 413, None),
]


@pytest.mark.parametrize("path", ["/auth/register", "/auth/login"])
@pytest.mark.parametrize(("kwargs", "status", "code"), BAD_BODIES)
async def test_bad_bodies_change_nothing(
    client: httpx.AsyncClient,
    app: Quart,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str | None,
) -> None:
    """Invalid JSON, wrong types, bad names or passwords, non-JSON bodies: a JSON 4xx, no change."""
    async with app.app_context():
        # A user to leave alone; a cheap hash, since hashing is not what this tests.
        record = {
            "username": "ada",
            "password_hash": generate_password_hash("x", "pbkdf2:sha256:1"),
        }
        await get_store().set("user:ada", record)
    response = await assert_refused_unchanged(app, client, "POST", path, status, code, **kwargs)
    assert cookie_of(response) is None


async def test_longest_valid_credentials_register(client: httpx.AsyncClient) -> None:
    """The limits are inclusive: a 32-character name and a 128-character password work."""
    creds = {"username": "a" * 32, "password": "p" * 128}
    assert (await client.post("/auth/register", json=creds)).status_code == 201
    assert (await client.post("/auth/login", json=creds)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/auth/register"),
        ("GET", "/auth/login"),
        ("GET", "/auth/logout"),
        ("POST", "/auth/me"),
        ("DELETE", "/auth/me"),
    ],
)
async def test_wrong_methods_are_405(
    client: httpx.AsyncClient, app: Quart, method: str, path: str
) -> None:
    """Wrong methods on auth routes get a JSON 405 and change nothing."""
    await assert_refused_unchanged(app, client, method, path, 405, "method_not_allowed")


async def test_store_down_is_json_503(tmp_path: Path) -> None:
    """With the main store down, register and login answer a JSON 503, not a 500 or a 401."""
    async with client_with_dead_store(tmp_path, STORE_URL="dead") as (_, c):
        assert_json_error(await c.post("/auth/register", json=ADA), 503, "store_unavailable")
        assert_json_error(await c.post("/auth/login", json=ADA), 503, "store_unavailable")


async def test_login_that_fails_midway_keeps_nothing_even_if_the_store_returns(
    tmp_path: Path,
) -> None:
    """The session store dies as a login moves the session, and is back before the
    response goes out: the answer is a 503 with no cookie, and no session holds the user.

    Sessions live in a Redis of this test's own, users in SQLite. The store is
    killed before the login request and restarted in an ``after_request``
    hook, which runs after the route failed and before the session is saved.
    """
    with RedisServer() as sessions_redis:
        app = create_app(
            {
                "STORE_URL": f"sqlite://{tmp_path / 'qapp.db'}",
                "SESSION_STORE_URL": sessions_redis.url,
                "INSTANCE_PATH": str(tmp_path),
            }
        )
        restarted: list[bool] = []

        @app.after_request
        async def store_is_back(response: Response) -> Response:
            if not sessions_redis.ping():
                await asyncio.to_thread(sessions_redis.start)
                restarted.append(True)
            return response

        async with app.test_app():
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
                assert (await c.post("/auth/register", json=ADA)).status_code == 201
                sessions_redis.kill()
                response = await c.post("/auth/login", json=ADA)
                assert restarted == [True]
                assert_json_error(response, 503, "store_unavailable")
                assert "set-cookie" not in response.headers
                assert_json_error(await c.get("/auth/me"), 401)
            async with app.app_context():
                assert await dump(get_store("session")) == {}
