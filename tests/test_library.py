"""qapp as a library: ``Qapp(app)`` on a plain Quart app of the user's own, on every backend."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart, g
from quart import session as quart_session

from qapp import Qapp, login_required
from qapp.ext import StoreSessionInterface, get_store, session, state_of
from qapp.ext.sessions import ID_PATTERN
from qapp.state import ConfigurationError


def make_app(store_url: str, tmp_path: Path, **config: Any) -> tuple[Quart, Qapp]:
    """A user's app: a few routes on qapp's stores, sessions and users."""
    app = Quart(__name__, instance_path=str(tmp_path / "instance"))
    app.config["QAPP_STORE_URL"] = store_url
    app.config.update(config)
    qapp = Qapp(app, session_values=["visits"])
    users = {"ada": {"name": "ada"}}

    @qapp.user_loader
    async def load_user(user_id: str) -> dict[str, str] | None:
        g.loads = g.get("loads", 0) + 1
        return users.get(user_id)

    @app.post("/hits")
    async def hits() -> dict[str, int]:
        return {"hits": await qapp.store().incr("hits")}

    @app.post("/theme/<name>")
    async def theme(name: str) -> dict[str, str]:
        quart_session["theme"] = name  # Quart's own session, unchanged
        return {"theme": name}

    @app.get("/theme")
    async def read_theme() -> dict[str, Any]:
        return {"theme": quart_session.get("theme")}

    @app.post("/visit")
    async def visit() -> dict[str, int]:
        return {"visits": await session.incr("visits")}

    @app.post("/login/<name>")
    async def login(name: str) -> dict[str, Any]:
        return {"user": await qapp.login_user(name)}

    @app.post("/logout")
    async def logout() -> dict[str, bool]:
        await qapp.logout_user()
        return {"ok": True}

    @app.get("/me")
    @login_required
    async def me() -> dict[str, Any]:
        return {"user": g.user, "loads": g.loads}

    return app, qapp


@pytest.fixture
async def user_app(
    store_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Quart, httpx.AsyncClient]]:
    app, _ = make_app(store_url, tmp_path)
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://user.app") as client:
            yield app, client


def test_the_store_api_needs_no_quart() -> None:
    """``import qapp.state`` in a fresh interpreter loads no Quart (nor the extension)."""
    import subprocess

    code = "import sys, qapp.state; sys.exit('quart' in sys.modules or 'qapp.ext' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_package_ships_type_information() -> None:
    """py.typed ships beside the package, so users' type checkers read qapp's hints."""
    import qapp

    assert (Path(qapp.__file__).parent / "py.typed").exists()


async def test_five_lines_give_an_atomic_counter(user_app: tuple[Quart, httpx.AsyncClient]) -> None:
    """100 concurrent hits on a user's route get 100 distinct numbers."""
    _, client = user_app
    answers = await asyncio.gather(*(client.post("/hits") for _ in range(100)))
    assert sorted(a.json()["hits"] for a in answers) == list(range(1, 101))


async def test_quart_session_lives_server_side(user_app: tuple[Quart, httpx.AsyncClient]) -> None:
    """Quart's session works as before; the data stays on the server, the cookie is an id."""
    app, client = user_app
    await client.post("/theme/dark")
    assert (await client.get("/theme")).json() == {"theme": "dark"}
    cookie = client.cookies["session"]
    sid = StoreSessionInterface().serializer(app).loads(cookie)  # signed, and only an id
    assert ID_PATTERN.fullmatch(sid)
    async with app.app_context():
        assert await get_store("session").namespace("session").get(sid) == {"theme": "dark"}


async def test_session_values_are_atomic(user_app: tuple[Quart, httpx.AsyncClient]) -> None:
    """100 concurrent session.incr with one cookie add exactly 100."""
    _, client = user_app
    assert (await client.post("/visit")).json() == {"visits": 1}
    answers = await asyncio.gather(*(client.post("/visit") for _ in range(100)))
    assert sorted(a.json()["visits"] for a in answers) == list(range(2, 102))


async def test_user_loader_login_required_and_logout(
    user_app: tuple[Quart, httpx.AsyncClient],
) -> None:
    """login_required is a JSON 401 until login, g.user loads once per request, logout ends it."""
    _, client = user_app
    refused = await client.get("/me")
    assert refused.status_code == 401
    assert refused.json() == {"error": "unauthorized", "message": "log in first"}
    await client.post("/visit")
    before = client.cookies["session"]
    assert (await client.post("/login/ada")).json() == {"user": {"name": "ada"}}
    assert client.cookies["session"] != before  # a new id at login: no fixation
    assert (await client.get("/me")).json() == {"user": {"name": "ada"}, "loads": 1}
    await client.post("/logout")
    assert (await client.get("/me")).status_code == 401


async def test_store_names_and_namespaces(store_url: str, tmp_path: Path) -> None:
    """Named stores come from config; an unconfigured name is the default store."""
    app, qapp = make_app(
        store_url,
        tmp_path,
        QAPP_STORES={"events": "memory://?max_entries=99"},
        QAPP_CACHE_STORE_URL="memory://?max_entries=99",
    )
    async with app.app_context():
        assert qapp.store("audit") is qapp.store()
        assert qapp.store("events") is qapp.store("cache")  # one URL, one store
        assert qapp.store("events") is not qapp.store()
        assert get_store("session") is qapp.store()


async def test_factory_pattern(store_url: str, tmp_path: Path) -> None:
    """Qapp() then init_app(app): one extension object for several apps, state on each app."""
    qapp = Qapp()
    first, second = Quart("first"), Quart("second")
    for n, app in enumerate((first, second)):
        app.config["QAPP_STORE_URL"] = "memory://"
        app.config["QAPP_SECRET_KEY"] = "k" * 32 + str(n)
        qapp.init_app(app)
    assert state_of(first) is not state_of(second)
    assert state_of(first).store() is not state_of(second).store()


async def test_a_new_session_over_the_quota_is_refused(store_url: str, tmp_path: Path) -> None:
    """A dict write that would make a session past the client's quota is a 429; none is stored."""
    app, _ = make_app(store_url, tmp_path, QAPP_SESSION_QUOTA="2/hour")
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://user.app") as client:
            statuses = []
            for _ in range(3):
                client.cookies.clear()
                statuses.append((await client.post("/theme/dark")).status_code)
            refused = await client.post("/visit")
    assert statuses == [200, 200, 429]
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "session" not in client.cookies


def test_bad_configuration_fails_at_init(tmp_path: Path) -> None:
    """A bad store URL, a short key or a bad quota fails when Qapp is installed, not later."""
    for config in (
        {"QAPP_STORE_URL": "bogus://x"},
        {"QAPP_STORE_URL": "memory://", "QAPP_SECRET_KEY": "short"},
        {"QAPP_STORE_URL": "memory://", "QAPP_SESSION_QUOTA": "lots"},
    ):
        app = Quart(__name__, instance_path=str(tmp_path))
        app.config.update(config)
        with pytest.raises(ConfigurationError):
            Qapp(app)


def test_generated_key_is_shared_and_private(tmp_path: Path) -> None:
    """Without a configured key, one is made in the instance folder (0600) and reused."""
    keys = []
    for _ in range(2):
        app = Quart(__name__, instance_path=str(tmp_path / "instance"))
        app.config["QAPP_STORE_URL"] = "memory://"
        Qapp(app)
        keys.append(app.secret_key)
    assert keys[0] == keys[1]
    assert ((tmp_path / "instance" / "secret_key").stat().st_mode & 0o777) == 0o600


async def test_store_outage_is_a_json_503(tmp_path: Path) -> None:
    """A user's route on a store that is down answers a JSON 503 with Retry-After."""
    from qapp.testing import free_port

    app, _ = make_app(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://user.app") as client:
            response = await client.post("/hits")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert json.loads(response.text)["error"] == "store_unavailable"


async def test_a_stale_lease_is_a_json_409(tmp_path: Path) -> None:
    """A fenced write refused for a stale token reaches the client as a JSON 409, not a 500."""
    app, qapp = make_app(f"sqlite://{tmp_path / 'fence.db'}", tmp_path)

    @app.post("/fenced")
    async def fenced() -> dict[str, bool]:
        async with qapp.store().lock("job", timeout=0.2) as lease:
            await asyncio.sleep(0.3)  # past the lease
            async with qapp.store().lock("job", timeout=5):  # a newer holder
                await lease.set("result", 1)  # refused: a newer token was issued
        return {"ok": True}

    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://user.app") as client:
            response = await client.post("/fenced")
    assert response.status_code == 409
    assert response.json()["error"] == "stale_lease"
