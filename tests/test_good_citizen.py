"""``Qapp(app)`` breaks nothing of Quart: an ordinary app answers alike with and without it.

The app (``tests/citizen_app.py``) is built three ways: plain Quart (the
control), with ``Qapp(app)`` as a user adds it (the fast path off, its
default), and with the fast path on (as qapp's service runs); with qapp on
SQLite and on Redis. Each runs the same scenarios (``tests/citizen_scenarios.py``)
in process, through Quart's test client and through httpx's ASGITransport,
and must give the answers a correct Quart app gives. The same scenarios on
real hypercorn and granian servers are in ``tests/test_good_citizen_live.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from quart import Quart
from quart.asgi import ASGIHTTPConnection

from qapp import Qapp, create_app
from qapp.ext.fastpath import LeanHTTPConnection
from tests.citizen_app import SECRET, make_app
from tests.citizen_scenarios import (
    EXPECTED,
    PATIENCE,
    SCENARIOS,
    WEBSOCKET_SCENARIOS,
    HttpxClient,
    QuartTestClient,
    run_scenarios,
)

#: (with qapp, fast path, store): the control, then qapp as users get it and as the service runs.
BUILDS = [
    pytest.param(False, False, None, id="plain-quart"),
    pytest.param(True, False, "sqlite", id="qapp-sqlite"),
    pytest.param(True, False, "redis", id="qapp-redis"),
    pytest.param(True, True, "sqlite", id="qapp-fast-sqlite"),
    pytest.param(True, True, "redis", id="qapp-fast-redis"),
]


def build(
    with_qapp: bool, fast_path: bool, store: str | None, request: pytest.FixtureRequest
) -> Quart:
    """The citizen app of one build, on a fresh store of the test's own."""
    url = None if store is None else request.getfixturevalue(f"{store}_url")
    app = make_app(with_qapp=with_qapp, fast_path=fast_path, store_url=url)
    uses_fast_path = app.asgi_http_class is LeanHTTPConnection
    assert uses_fast_path is fast_path
    return app


@pytest.mark.parametrize(("with_qapp", "fast_path", "store"), BUILDS)
async def test_quart_test_client_gets_the_same_answers(
    with_qapp: bool, fast_path: bool, store: str | None, request: pytest.FixtureRequest
) -> None:
    """Through Quart's test client every scenario (websocket, hang-up too) answers as Quart does."""
    app = build(with_qapp, fast_path, store, request)
    async with app.test_app():
        client = QuartTestClient(app.test_client())
        seen = await run_scenarios(client, {**SCENARIOS, **WEBSOCKET_SCENARIOS})
    assert seen == {name: EXPECTED[name] for name in seen}
    assert set(seen) == set(EXPECTED)


@pytest.mark.parametrize(("with_qapp", "fast_path", "store"), BUILDS)
async def test_httpx_asgi_transport_gets_the_same_answers(
    with_qapp: bool, fast_path: bool, store: str | None, request: pytest.FixtureRequest
) -> None:
    """Through httpx's ASGITransport every HTTP scenario answers as plain Quart does."""
    app = build(with_qapp, fast_path, store, request)
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://citizen.test") as c:
            seen = await run_scenarios(HttpxClient(c), SCENARIOS)
    assert seen == {name: EXPECTED[name] for name in SCENARIOS}


@pytest.mark.parametrize(("with_qapp", "fast_path", "store"), BUILDS)
async def test_a_request_that_sends_nothing_yet_is_answered(
    with_qapp: bool, fast_path: bool, store: str | None, request: pytest.FixtureRequest
) -> None:
    """A hand-driven test-client request that has sent no body message yet gets its answer."""
    app = build(with_qapp, fast_path, store, request)
    received = bytearray()
    async with app.test_app(), app.test_client().request("/stream-out") as connection:
        async with asyncio.timeout(PATIENCE):
            while len(received) < len(EXPECTED["streamed answer"].body):
                received.extend(await connection.receive())
    assert received.decode() == EXPECTED["streamed answer"].body


def test_the_fast_path_is_off_unless_asked_for(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Qapp(app) keeps Quart's own request handling; QAPP_FAST_PATH (config or env) swaps it."""
    monkeypatch.delenv("QAPP_FAST_PATH", raising=False)

    def app_with_qapp(**config: object) -> Quart:
        app = Quart(__name__)
        app.secret_key = SECRET
        app.config.update(QAPP_STORE_URL=sqlite_url, **config)
        Qapp(app)
        return app

    plain = app_with_qapp()
    assert plain.asgi_http_class is ASGIHTTPConnection
    assert "ensure_async" not in vars(plain)
    assert app_with_qapp(QAPP_FAST_PATH=True).asgi_http_class is LeanHTTPConnection
    monkeypatch.setenv("QAPP_FAST_PATH", "1")
    assert app_with_qapp().asgi_http_class is LeanHTTPConnection
    assert app_with_qapp(QAPP_FAST_PATH=False).asgi_http_class is ASGIHTTPConnection


def test_the_service_runs_on_the_fast_path(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """create_app turns the fast path on; FAST_PATH=False or QAPP_FAST_PATH=0 turn it off."""
    monkeypatch.delenv("QAPP_FAST_PATH", raising=False)
    settings = {"STORE_URL": sqlite_url, "INSTANCE_PATH": str(tmp_path)}
    assert create_app(settings).asgi_http_class is LeanHTTPConnection
    off = create_app({**settings, "FAST_PATH": False})
    assert off.asgi_http_class is ASGIHTTPConnection
    monkeypatch.setenv("QAPP_FAST_PATH", "0")
    assert create_app(settings).asgi_http_class is ASGIHTTPConnection
