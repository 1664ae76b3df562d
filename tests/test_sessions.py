"""Server-side sessions: what the cookie holds, what the store holds, and which ids are adopted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import stat
import string
from collections import Counter
from pathlib import Path

import httpx
import pytest
from itsdangerous import URLSafeSerializer
from quart import Quart, session

from qapp import create_app
from qapp.ext import StoreSessionInterface, session_cookie, sessions, state_of
from qapp.state import Store
from qapp.testing import free_port
from tests.storedump import assert_json_error, client_with_dead_store, cookie_of, snapshot


def _sid(app: Quart, cookie: str) -> str:
    """The session id a cookie carries, checked against the app's key."""
    interface = app.session_interface
    assert isinstance(interface, StoreSessionInterface)
    sid: str = interface.serializer(app).loads(cookie)
    return sid


def _session_keys(contents: dict[str, dict[str, str]]) -> set[str]:
    return {key for data in contents.values() for key in data if key.startswith("session:")}


async def test_cookie_is_a_signed_random_id_httponly_samesite(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """The cookie holds only a signed 256-bit id; HttpOnly, SameSite=Lax, Secure off by default."""
    response = await client.post("/session/counter/inc")
    header = response.headers["set-cookie"]
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Secure" not in header
    cookie = cookie_of(response)
    assert cookie is not None
    sid = _sid(app, cookie)
    assert sessions.ID_PATTERN.fullmatch(sid)  # 43 url-safe characters: 32 random bytes
    keys = _session_keys(await snapshot(app))
    assert keys == {f"session:{sid}", f"session:{sid}:counter"}


@pytest.mark.limits_off  # 300 new sessions from one address: over the quota
async def test_ids_are_unique_and_carry_at_least_128_bits(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """300 new clients get 300 distinct 43-character url-safe ids that look uniformly random."""
    assert sessions.ID_BYTES * 8 >= 128
    ids = []
    for _ in range(300):
        client.cookies.clear()
        cookie = cookie_of(await client.post("/session/counter/inc"))
        assert cookie is not None
        ids.append(_sid(app, cookie))
    assert len(set(ids)) == len(ids)
    alphabet = set(string.ascii_letters + string.digits + "-_")
    assert all(len(sid) == 43 and set(sid) <= alphabet for sid in ids)
    # 32 random bytes fill 42 characters with 6 bits each (the 43rd holds 4 bits).
    # Pooled over 12,600 characters, a uniform source shows about 6 bits per
    # character; a counter, a timestamp or a narrow alphabet would show far less.
    counts = Counter(c for sid in ids for c in sid[:42])
    total = sum(counts.values())
    bits_per_char = -sum(n / total * math.log2(n / total) for n in counts.values())
    assert len(counts) == 64
    assert bits_per_char * 42 >= 240  # ≥ 128 with a wide margin
    # Every position varies: no fixed prefix or suffix.
    assert all(len({sid[i] for sid in ids}) > 32 for i in range(42))


async def test_session_data_is_json_in_the_store(client: httpx.AsyncClient, app: Quart) -> None:
    """The session's data is a JSON object in the store: who is logged in, when, and how."""
    creds = {"username": "ada", "password": "correct horse"}
    await client.post("/auth/register", json=creds)
    response = await client.post("/auth/login", json=creds)
    cookie = cookie_of(response)
    assert cookie is not None
    contents = await snapshot(app)
    raw = next(data[f"session:{_sid(app, cookie)}"] for data in contents.values())
    data = json.loads(raw)
    login_at = data.pop("_login_at")
    assert isinstance(login_at, float)
    assert data == {"_user_id": "ada", "_remember": False, "_user_gen": 0}


async def test_secure_cookie_when_configured(store_url: str, tmp_path: Path) -> None:
    """SESSION_COOKIE_SECURE (also from QAPP_SESSION_COOKIE_SECURE=1) marks the cookie Secure."""
    app = create_app(
        {"STORE_URL": store_url, "INSTANCE_PATH": str(tmp_path), "SESSION_COOKIE_SECURE": "1"}
    )
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="https://qapp.test") as c:
            response = await c.post("/session/counter/inc")
    assert "Secure" in response.headers["set-cookie"]


async def test_tampered_cookie_starts_a_fresh_session(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """A cookie with a broken signature is a new client: counter 0, a new id on first change."""
    cookie = cookie_of(await client.post("/session/counter/inc"))
    assert cookie is not None
    payload, _, signature = cookie.rpartition(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    client.cookies.clear()
    client.cookies.set("session", f"{payload}.{flipped}")
    assert (await client.get("/session/counter")).json() == {"counter": 0}
    response = await client.post("/session/counter/inc")
    assert response.json() == {"counter": 1}
    new_cookie = cookie_of(response)
    assert new_cookie is not None
    assert _sid(app, new_cookie) != _sid(app, cookie)


async def test_unsigned_client_chosen_id_is_never_adopted(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """A bare id (even a live one) without its signature is ignored, not adopted."""
    cookie = cookie_of(await client.post("/session/counter/inc"))
    assert cookie is not None
    live_sid = _sid(app, cookie)
    async with httpx.AsyncClient(transport=client._transport, base_url=client.base_url) as evil:
        evil.cookies.set("session", live_sid)
        assert (await evil.get("/session/counter")).json() == {"counter": 0}
        response = await evil.post("/session/counter/inc")
    assert response.json() == {"counter": 1}
    assert (await client.get("/session/counter")).json() == {"counter": 1}


async def test_signed_but_unknown_id_is_never_adopted(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """A correctly signed id that the store does not hold starts a session with a new id."""
    interface = app.session_interface
    assert isinstance(interface, StoreSessionInterface)
    planted = "p" * 43
    client.cookies.set("session", interface.serializer(app).dumps(planted))
    response = await client.post("/session/counter/inc")
    assert response.json() == {"counter": 1}
    cookie = cookie_of(response)
    assert cookie is not None
    assert _sid(app, cookie) != planted
    assert f"session:{planted}" not in _session_keys(await snapshot(app))


async def test_expired_session_is_a_new_client(store_url: str, tmp_path: Path) -> None:
    """After SESSION_TTL seconds idle, the old cookie is a new client with a new id."""
    app = create_app({"STORE_URL": store_url, "INSTANCE_PATH": str(tmp_path), "SESSION_TTL": 0.4})
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            first = cookie_of(await c.post("/session/counter/inc"))
            await asyncio.sleep(0.8)
            assert (await c.get("/session/counter")).json() == {"counter": 0}
            response = await c.post("/session/counter/inc")
            assert response.json() == {"counter": 1}
            second = cookie_of(response)
    assert first is not None
    assert second is not None
    assert _sid(app, first) != _sid(app, second)


async def test_ttl_slides_with_use(store_url: str, tmp_path: Path) -> None:
    """A session used more often than its ttl outlives the ttl many times over."""
    app = create_app({"STORE_URL": store_url, "INSTANCE_PATH": str(tmp_path), "SESSION_TTL": 0.6})
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            await c.post("/session/counter/inc")
            for _ in range(6):  # 1.2 s in all: twice the ttl
                await asyncio.sleep(0.2)
                assert (await c.get("/session/counter")).json() == {"counter": 1}


async def test_ttl_renewed_once_per_tenth_of_it(store_url: str, tmp_path: Path) -> None:
    """Requests close together renew the session's ttl once, not once each."""
    app = create_app({"STORE_URL": store_url, "INSTANCE_PATH": str(tmp_path), "SESSION_TTL": 60})
    async with app.test_app():
        store: Store = app.extensions["qapp"].stores["session"]
        renewals = 0
        real_expire = store.expire

        async def counting_expire(key: str, ttl: float | None) -> bool:
            nonlocal renewals
            renewals += 1
            return await real_expire(key, ttl)

        store.expire = counting_expire  # type: ignore[method-assign]
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            await c.post("/session/counter/inc")
            for _ in range(10):
                assert (await c.get("/session/counter")).json() == {"counter": 1}
    # The data and each session value (the counter among them), renewed
    # together, once: well within 6 s.
    assert renewals == 1 + len(state_of(app).session_values)


async def test_login_regenerates_id_and_keeps_counter(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """Login moves the session to a new id, deletes the old one and keeps the counter."""
    creds = {"username": "grace", "password": "hopper1906"}
    await client.post("/auth/register", json=creds)
    before = cookie_of(await client.post("/session/counter/inc"))
    assert before is not None
    after = cookie_of(await client.post("/auth/login", json=creds))
    assert after is not None
    old, new = _sid(app, before), _sid(app, after)
    assert old != new
    keys = _session_keys(await snapshot(app))
    assert keys == {f"session:{new}", f"session:{new}:counter"}
    assert (await client.get("/session/counter")).json() == {"counter": 1}
    # The pre-login cookie is dead: it may have been planted or seen.
    async with httpx.AsyncClient(transport=client._transport, base_url=client.base_url) as old_c:
        old_c.cookies.set("session", before)
        assert (await old_c.get("/auth/me")).status_code == 401
        assert (await old_c.get("/session/counter")).json() == {"counter": 0}


async def test_logout_deletes_session_and_scoped_values(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """Logout removes the session and its counter from the store and drops the cookie."""
    creds = {"username": "alan", "password": "turing1912"}
    await client.post("/auth/register", json=creds)
    await client.post("/auth/login", json=creds)
    await client.post("/session/counter/inc")
    assert _session_keys(await snapshot(app))
    response = await client.post("/auth/logout")
    assert response.status_code == 204
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert _session_keys(await snapshot(app)) == set()


async def test_session_store_down_is_json_503(tmp_path: Path) -> None:
    """A session cookie while the session store is unreachable gets a JSON 503, not a 500."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(
        {
            "STORE_URL": "memory://",
            "SESSION_STORE_URL": dead,
            "INSTANCE_PATH": str(tmp_path),
        }
    )
    interface = app.session_interface
    assert isinstance(interface, StoreSessionInterface)
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            # No cookie: nothing to read, so the store is never asked.
            assert (await c.get("/session/counter")).json() == {"counter": 0}
            c.cookies.set("session", interface.serializer(app).dumps("s" * 43))
            response = await c.get("/session/counter")
            assert_json_error(response, 503, "store_unavailable")
            assert response.headers["retry-after"]
            response = await c.post("/session/counter/inc")
            assert_json_error(response, 503, "store_unavailable")


@pytest.mark.parametrize(
    "value", [b"", b"garbage", b"a.b.c", b"x" * 4000, "\u00e9t\u00e9".encode(), b"\xff\xfe"]
)
async def test_junk_cookies_are_new_clients(client: httpx.AsyncClient, value: bytes) -> None:
    """Any junk in the session cookie is a new client, never an error."""
    response = await client.get("/session/counter", headers={b"cookie": b"session=" + value})
    assert response.status_code == 200
    assert response.json() == {"counter": 0}


def test_secret_key_file_is_private_to_owner(tmp_path: Path) -> None:
    """The generated key that signs ids is mode 0600, even under a umask that allows all."""
    old_umask = os.umask(0)
    try:
        create_app({"STORE_URL": "memory://", "INSTANCE_PATH": str(tmp_path)})
    finally:
        os.umask(old_umask)
    info = os.stat(tmp_path / "secret_key")
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()
    # No temporary candidate is left behind for others to read.
    assert [p.name for p in tmp_path.iterdir() if "secret" in p.name] == ["secret_key"]


async def test_dict_changes_without_save_are_saved_at_the_end(app: Quart) -> None:
    """A route that only sets session["k"] gets a session, saved when the answer is made."""

    @app.post("/_set/<value>")
    async def set_value(value: str) -> dict[str, str]:
        session["k"] = value
        return {"k": value}

    @app.get("/_get")
    async def get_value() -> dict[str, str | None]:
        return {"k": session.get("k")}

    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            assert cookie_of(await c.post("/_set/one")) is not None
            assert (await c.get("/_get")).json() == {"k": "one"}
            assert cookie_of(await c.post("/_set/two")) is None
            assert (await c.get("/_get")).json() == {"k": "two"}


async def test_unsaved_change_with_store_down_is_503(tmp_path: Path) -> None:
    """If that end-of-request save fails, the answer becomes a JSON 503, and sets no cookie."""
    async with client_with_dead_store(tmp_path, SESSION_STORE_URL="dead") as (app, c):

        @app.post("/_set")
        async def set_value() -> dict[str, str]:
            session["k"] = "v"
            return {"k": "v"}

        response = await c.post("/_set")
    assert_json_error(response, 503, "store_unavailable")
    assert response.headers["retry-after"] == "1"
    assert cookie_of(response) is None


async def _victim(client: httpx.AsyncClient, app: Quart) -> tuple[str, str]:
    """Register and log in a user with a counter of 3; return its cookie and session id."""
    creds = {"username": "victim", "password": "victim-password"}
    await client.post("/auth/register", json=creds)
    cookie = cookie_of(await client.post("/auth/login", json=creds))
    assert cookie is not None
    for _ in range(3):
        await client.post("/session/counter/inc")
    return cookie, _sid(app, cookie)


def _bad_cookie(kind: str, app: Quart, cookie: str, sid: str) -> str:
    """A cookie an attacker could present, made from the victim's cookie and id."""
    if kind == "forged":
        # A made-up id with a made-up signature, in the right shape.
        return URLSafeSerializer("guessed key", salt=sessions.SALT).dumps("f" * 43)
    if kind == "cross_signed":
        # The victim's real id, validly signed, but under another secret key.
        return URLSafeSerializer("another app's key", salt=sessions.SALT).dumps(sid)
    if kind == "other_salt":
        # The right key, but a signature made for something else than a session id.
        return URLSafeSerializer(app.secret_key, salt="cookie-session").dumps(sid)  # type: ignore[arg-type]
    if kind.startswith("truncated"):
        return cookie[: int(kind.removeprefix("truncated"))]
    if kind == "payload_swapped":
        # The victim's signature on another id.
        signature = cookie.rpartition(".")[2]
        other = URLSafeSerializer("x", salt=sessions.SALT).dumps("g" * 43).rpartition(".")[0]
        return f"{other}.{signature}"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "forged",
        "cross_signed",
        "other_salt",
        "payload_swapped",
        "truncated1",
        "truncated20",
        "truncated45",
        "truncated-1",
    ],
)
async def test_bad_cookies_are_rejected_never_adopted(
    client: httpx.AsyncClient, app: Quart, kind: str
) -> None:
    """Forged, cross-signed, re-salted and cut cookies are a new client; the victim is untouched."""
    cookie, sid = await _victim(client, app)
    bad = _bad_cookie(kind, app, cookie, sid)
    assert bad != cookie
    before = await snapshot(app)
    async with httpx.AsyncClient(transport=client._transport, base_url=client.base_url) as evil:
        evil.cookies.set("session", bad)
        assert_json_error(await evil.get("/auth/me"), 401, "unauthorized")
        assert (await evil.get("/session/counter")).json() == {"counter": 0}
        assert await snapshot(app) == before  # reading planted nothing
        response = await evil.post("/session/counter/inc")
    assert response.json() == {"counter": 1}
    fresh = cookie_of(response)
    assert fresh is not None
    assert _sid(app, fresh) not in {sid, "f" * 43, "g" * 43}
    # The victim is still logged in with the counter it had.
    assert (await client.get("/auth/me")).json() == {"username": "victim"}
    assert (await client.get("/session/counter")).json() == {"counter": 3}
    assert _session_keys(await snapshot(app)) == {
        f"session:{sid}",
        f"session:{sid}:counter",
        f"session:{_sid(app, fresh)}",
        f"session:{_sid(app, fresh)}:counter",
    }


async def test_cookie_replayed_after_logout_is_dead(client: httpx.AsyncClient, app: Quart) -> None:
    """A cookie copied before logout is a new client afterwards: 401, counter 0, never revived."""
    cookie, sid = await _victim(client, app)
    assert (await client.post("/auth/logout")).status_code == 204
    async with httpx.AsyncClient(transport=client._transport, base_url=client.base_url) as replay:
        replay.cookies.set("session", cookie)
        assert_json_error(await replay.get("/auth/me"), 401, "unauthorized")
        assert (await replay.get("/session/counter")).json() == {"counter": 0}
        response = await replay.post("/session/counter/inc")
        assert response.json() == {"counter": 1}
        fresh = cookie_of(response)
        assert fresh is not None
        assert _sid(app, fresh) != sid
        # Logging out again with the dead cookie is harmless.
        replay.cookies.clear()
        replay.cookies.set("session", cookie)
        assert (await replay.post("/auth/logout")).status_code == 204
    keys = _session_keys(await snapshot(app))
    assert not any(key.startswith(f"session:{sid}") for key in keys)


async def test_every_login_issues_a_new_id(client: httpx.AsyncClient, app: Quart) -> None:
    """Each login, also a second one while logged in, moves the session to a new id."""
    _, first = await _victim(client, app)
    creds = {"username": "victim", "password": "victim-password"}
    again = cookie_of(await client.post("/auth/login", json=creds))
    assert again is not None
    second = _sid(app, again)
    assert second != first
    assert (await client.get("/session/counter")).json() == {"counter": 3}
    keys = _session_keys(await snapshot(app))
    assert keys == {f"session:{second}", f"session:{second}:counter"}


async def test_session_store_down_fails_only_routes_that_need_it(tmp_path: Path) -> None:
    """With the session store down, a client with a session cookie still gets the page,
    /counter/unsafe and /openapi.json; session routes and /auth/me answer a JSON 503."""
    async with client_with_dead_store(tmp_path, SESSION_STORE_URL="dead") as (app, c):
        async with app.app_context():
            signed = StoreSessionInterface().serializer(app).dumps("A" * 43)
        c.cookies.set("session", signed)
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/openapi.json")).status_code == 200
        assert (await c.post("/counter/unsafe")).status_code == 200
        assert_json_error(await c.get("/session/counter"), 503, "store_unavailable")
        assert_json_error(await c.post("/session/counter/inc"), 503, "store_unavailable")
        assert_json_error(await c.get("/auth/me"), 503, "store_unavailable")


async def test_session_flood_on_memory_never_evicts_users(tmp_path: Path) -> None:
    """Anonymous sessions flooded past memory://'s bound evict old sessions, never user accounts."""
    app = create_app({"STORE_URL": "memory://?max_entries=50", "INSTANCE_PATH": str(tmp_path)})
    creds = {"username": "ada", "password": "correct horse"}
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            assert (await c.post("/auth/register", json=creds)).status_code == 201
            first = cookie_of(await c.post("/auth/login", json=creds))
            assert first is not None
            # Each anonymous inc writes two session keys: 120 keys against a bound of 50.
            for _ in range(60):
                c.cookies.clear()
                assert (await c.post("/session/counter/inc")).json() == {"counter": 1}
            stored = await snapshot(app)
            assert (
                sum(key.startswith("session:") for key in stored["memory://?max_entries=50"]) <= 50
            )
            # The oldest session (the login's) was evicted with the flood...
            c.cookies.set("session", first)
            assert (await c.get("/auth/me")).status_code == 401
            # ...but the account was not: the name is still taken and the login works.
            c.cookies.clear()
            assert (await c.post("/auth/register", json=creds)).status_code == 409
            assert (await c.post("/auth/login", json=creds)).status_code == 200
            assert (await c.get("/auth/me")).json() == {"username": "ada"}


async def test_anonymous_sessions_start_short_and_login_gives_the_full_ttl(
    store_url: str, tmp_path: Path
) -> None:
    """A session nobody logged into lives ANONYMOUS_SESSION_TTL; logging in gives it SESSION_TTL."""
    app = create_app(
        {
            "STORE_URL": store_url,
            "INSTANCE_PATH": str(tmp_path),
            "SESSION_TTL": 60,
            "ANONYMOUS_SESSION_TTL": 2.0,
        }
    )
    creds = {"username": "ada", "password": "correct horse"}
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            assert (await c.post("/session/counter/inc")).json() == {"counter": 1}
            await asyncio.sleep(2.5)
            assert (await c.get("/session/counter")).json() == {"counter": 0}  # gone
            assert (await c.post("/auth/register", json=creds)).status_code == 201
            assert (await c.post("/session/counter/inc")).json() == {"counter": 1}
            assert (await c.post("/auth/login", json=creds)).status_code == 200
            await asyncio.sleep(2.5)
            assert (await c.get("/auth/me")).json() == {"username": "ada"}
            assert (await c.get("/session/counter")).json() == {"counter": 1}


def test_cookie_signature_is_itsdangerous_hmac_derivation(tmp_path: Path) -> None:
    """Keys derived once sign exactly as itsdangerous' per-call hmac derivation does, both ways."""
    app = create_app({"STORE_URL": "memory://", "INSTANCE_PATH": str(tmp_path)})
    app.config["SECRET_KEY_FALLBACKS"] = ["an-older-key-" + "o" * 32]
    ours = StoreSessionInterface().serializer(app)
    theirs = URLSafeSerializer(
        [*app.config["SECRET_KEY_FALLBACKS"], app.secret_key],
        salt=sessions.SALT,
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
    )
    sid = "x" * 43
    assert ours.dumps(sid) == theirs.dumps(sid)
    assert ours.loads(theirs.dumps(sid)) == sid
    older = URLSafeSerializer(
        app.config["SECRET_KEY_FALLBACKS"][0],
        salt=sessions.SALT,
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
    )
    assert ours.loads(older.dumps(sid)) == sid  # a fallback key still verifies


def test_good_cookies_are_remembered_until_the_keys_change(tmp_path: Path) -> None:
    """A good cookie is checked once; a forged one never passes; a new key forgets the old ones."""
    app = create_app({"STORE_URL": "memory://", "INSTANCE_PATH": str(tmp_path)})
    interface = StoreSessionInterface()
    sid = "y" * 43
    good = interface.serializer(app).dumps(sid)
    assert interface.session_id(app, good) == sid
    assert interface.session_id(app, good) == sid  # remembered: the same answer
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    for _ in range(3):
        assert interface.session_id(app, forged) is None
    # More good cookies than are remembered: the memory starts again, answers stay right.
    for n in range(session_cookie.VERIFIED_KEPT + 5):
        other = f"{n:043d}"
        assert interface.session_id(app, interface.serializer(app).dumps(other)) == other
    assert interface.session_id(app, good) == sid
    # A new secret key, the old one not kept as a fallback: the old cookie is dead at once.
    app.secret_key = "a-new-key-" + "n" * 40
    assert interface.session_id(app, good) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], None),
        ([(b"cookie", b"session=abc.def")], "abc.def"),
        ([(b"Cookie", b"theme=dark; session=abc.def; lang=fr")], "abc.def"),
        ([(b"cookie", b"xsession=nope; session_x=nope")], None),
        ([(b"cookie", b"theme=dark"), (b"cookie", b" session = abc ")], "abc"),
        ([(b"cookie", b"session=first; session=second")], "first"),
        ([(b"cookie", b"session=")], ""),
        ([(b"cookie", b'session="a b"')], session_cookie.QUOTED),  # left to werkzeug
    ],
)
def test_the_session_cookie_is_found_in_raw_headers(
    headers: list[tuple[bytes, bytes]], expected: str | None
) -> None:
    """The session cookie is read from the raw headers as werkzeug reads an unquoted value;
    a quoted one is left to werkzeug."""
    assert session_cookie.cookie_value(headers, "session") == expected


async def test_a_quoted_session_cookie_is_parsed_by_werkzeug(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """A session cookie sent quoted still names its session (werkzeug unquotes it)."""
    cookie = cookie_of(await client.post("/session/counter/inc"))
    assert cookie is not None
    client.cookies.clear()
    answer = await client.get("/session/counter", headers={"Cookie": f'session="{cookie}"'})
    assert answer.json() == {"counter": 1}
