"""Shared fixtures: a real redis-server per test session, a SQLite file per test,
and a ``store_url`` fixture parametrized over every backend.

Adding a backend means adding one ``<name>_url`` fixture and its name to
:data:`BACKENDS`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from quart import Quart

from qapp import create_app
from qapp.state import Store, open_store
from qapp.testing import HypercornServer, RedisServer

BACKENDS = ["memory", "sqlite", "redis"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test session's own, on a free loopback port."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def one_worker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypercornServer]:
    """One qapp worker (``qapp serve``) on a SQLite file of its own, for one test module."""
    folder: Path = tmp_path_factory.mktemp("one-worker")
    env = {"QAPP_STORE_URL": f"sqlite://{folder / 'qapp.db'}", "QAPP_INSTANCE_PATH": str(folder)}
    with HypercornServer(workers=1, env=env) as running:
        yield running


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The test's Redis URL; the database is emptied after each test."""
    yield redis_server.url
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file for this test."""
    return f"sqlite://{tmp_path / 'qapp.db'}"


@pytest.fixture
def memory_url() -> str:
    return "memory://"


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of each backend in turn."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture(params=["sqlite", "redis"])
def shared_store_url(request: pytest.FixtureRequest) -> str:
    """The URL of each backend that several processes can share."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A connected store of each backend in turn, closed afterwards."""
    async with await open_store(store_url) as opened:
        yield opened


@pytest.fixture
def app(store_url: str, tmp_path: Path) -> Quart:
    """The app on each backend in turn, with its own instance folder."""
    return create_app({"STORE_URL": store_url, "INSTANCE_PATH": str(tmp_path / "instance")})


@pytest.fixture
async def client(app: Quart) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client driving the app in process, with its lifespan running."""
    # test_app() runs the lifespan (before_serving opens the stores), which
    # httpx's transport does not; requests then go to the app itself.
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            yield c
