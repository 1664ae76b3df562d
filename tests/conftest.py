"""Shared fixtures: a real redis-server per test session, a SQLite file per test,
and a ``store_url`` fixture parametrized over every backend; and the ``fast`` tier.

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
from qapp.testing.postgres import PostgresServer

BACKENDS = ["memory", "sqlite", "redis", "postgresql"]

#: Modules of unit tests. Their tests that start no server process are the
#: ``fast`` tier (``pytest -m fast``, under a minute), each on one backend: a
#: test run on every backend is in it once, on SQLite (on memory:// if it is
#: about the memory store), and never on Redis or PostgreSQL.
FAST_MODULES = frozenset(
    {
        "test_app",
        "test_auth",
        "test_cache",
        "test_config",
        "test_flight",
        "test_keys",
        "test_library",
        "test_memo",
        "test_packaging",
        "test_page",
        "test_race",
        "test_race_counts",
        "test_ratelimit",
        "test_session_counter",
        "test_sessions",
        "test_state",
        "test_state_failures",
        "test_state_lock_cancel",
        "test_validation",
    }
)
#: Tests of those modules that wait on purpose (a lease, a TTL, a load held
#: for seconds) or start processes: right where they are, but not quick.
NOT_FAST = frozenset(
    {
        "test_secret_key_race_free_across_processes",
        "test_failed_refresh_keeps_serving_the_stale_value",
        "test_stale_value_answered_at_once_while_one_refresh_runs",
        "test_steady_load_never_waits_and_refreshes_once_per_expiry",
        "test_safe_strategies_count_exactly",
        "test_anonymous_sessions_start_short_and_login_gives_the_full_ttl",
    }
)
#: Fixtures that start a server process.
SERVER_FIXTURES = frozenset({"redis_server", "postgres_server", "one_worker_server"})

#: The abuse limits, off: for tests whose subject is something else and that
#: send more from one address than one client may (every test client is
#: 127.0.0.1). The limits have tests of their own (test_abuse_deploy.py).
NO_LIMITS = dict.fromkeys(
    (
        "LOGIN_LIMIT",
        "LOGIN_ACCOUNT_LIMIT",
        "LOGIN_CLIENT_LIMIT",
        "REGISTER_CLIENT_LIMIT",
        "CACHE_QUOTA",
        "MEMO_QUOTA",
        "SESSION_QUOTA",
    ),
    "off",
)
#: The same, as a server's environment.
NO_LIMITS_ENV = {f"QAPP_{key}": value for key, value in NO_LIMITS.items()}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test session's own, on a free loopback port."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def one_worker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypercornServer]:
    """One qapp worker (``qapp serve``) on a SQLite file of its own, for one test module."""
    folder: Path = tmp_path_factory.mktemp("one-worker")
    env = {
        "QAPP_STORE_URL": f"sqlite://{folder / 'qapp.db'}",
        "QAPP_INSTANCE_PATH": str(folder),
        # Hostile-input tests send thousands of requests from one address.
        **NO_LIMITS_ENV,
        # The published ttl range (up to a year) is what schemathesis sends.
        "QAPP_CACHE_MAX_TTL": str(365 * 24 * 3600),
    }
    with HypercornServer(workers=1, env=env) as running:
        yield running


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The test's Redis URL; the database is emptied after each test."""
    yield redis_server.url
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test session's own, on a free loopback port (never 5432)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgresql_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The test's PostgreSQL URL; the store's tables are emptied after each test."""
    yield postgres_server.url
    postgres_server.empty_store()


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


@pytest.fixture(params=["sqlite", "redis", "postgresql"])
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
def app(store_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Quart:
    """The app on each backend in turn, with its own instance folder.

    Its abuse limits are the defaults, unless the test is marked ``limits_off``.
    """
    settings = {"STORE_URL": store_url, "INSTANCE_PATH": str(tmp_path / "instance")}
    if request.node.get_closest_marker("limits_off"):
        settings.update(NO_LIMITS)
    return create_app(settings)


@pytest.fixture
async def client(app: Quart) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client driving the app in process, with its lifespan running."""
    # test_app() runs the lifespan (before_serving opens the stores), which
    # httpx's transport does not; requests then go to the app itself.
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            yield c


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``fast`` the tests of :data:`FAST_MODULES` with no server process and no wait, once."""
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if item.module is None or item.module.__name__.rpartition(".")[2] not in FAST_MODULES:
            continue
        if item.get_closest_marker("slow") or item.get_closest_marker("serial"):
            continue
        if item.originalname in NOT_FAST:
            continue
        if SERVER_FIXTURES & set(item.fixturenames):
            continue
        params = item.callspec.params if hasattr(item, "callspec") else {}
        backends = {params[name] for name in ("store_url", "shared_store_url") if name in params}
        if backends and backends != {"memory" if "memory" in item.originalname else "sqlite"}:
            continue
        item.add_marker(pytest.mark.fast)
