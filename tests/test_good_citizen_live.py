"""``Qapp(app)`` breaks nothing of Quart on real servers: hypercorn and granian (``qapp serve``).

The in-process half is ``tests/test_good_citizen.py``; this half serves the
same ordinary app (``tests/citizen_app.py``) with one worker per build and
server, and runs the same scenarios over TCP: HTTP with httpx, websockets
with wsproto, a client that hangs up and one that stops sending with h11.
Each build must give the answers a correct Quart app gives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from qapp.testing import HypercornServer, RedisServer
from tests.citizen_scenarios import (
    EXPECTED,
    SCENARIOS,
    WEBSOCKET_SCENARIOS,
    ServerClient,
    run_scenarios,
)

pytestmark = pytest.mark.slow

#: The repository, from which the servers import ``tests.citizen_asgi``.
ROOT = Path(__file__).resolve().parents[1]

#: (server, with qapp, fast path, store) for each server. What a server changes
#: is how requests reach the app, which the fast path is about; the store only
#: changes where the session lives, and the in-process tests run each build
#: on both stores. So here qapp without the fast path runs on SQLite alone.
BUILDS = [
    pytest.param((server, qapp, fast, store), id=f"{server}-{name}")
    for server in ("hypercorn", "granian")
    for name, qapp, fast, store in (
        ("plain-quart", False, False, None),
        ("qapp-sqlite", True, False, "sqlite"),
        ("qapp-fast-sqlite", True, True, "sqlite"),
        ("qapp-fast-redis", True, True, "redis"),
    )
]


@pytest.fixture(scope="module", params=BUILDS)
def served(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HypercornServer]:
    """The citizen app of one build, on one worker of one server, for this module."""
    server, with_qapp, fast_path, store = request.param
    env = {"CITIZEN_QAPP": str(int(with_qapp)), "CITIZEN_FAST_PATH": str(int(fast_path))}
    if store == "sqlite":
        env["CITIZEN_STORE_URL"] = f"sqlite://{tmp_path_factory.mktemp('citizen') / 'qapp.db'}"
    elif store == "redis":
        env["CITIZEN_STORE_URL"] = redis_server.url
    app = "tests.citizen_asgi:app"
    with HypercornServer(app=app, workers=1, env=env, cwd=ROOT, server=server) as running:
        yield running


@pytest.fixture
async def client(served: HypercornServer) -> AsyncIterator[ServerClient]:
    """A client of its own (its own cookie jar) for the served app."""
    async with httpx.AsyncClient(base_url=served.url) as http:
        yield ServerClient(http, served.host, served.port)


async def test_real_server_gets_the_same_answers(client: ServerClient) -> None:
    """Over TCP every HTTP scenario answers as plain Quart does, on each server and build."""
    seen = await run_scenarios(client, SCENARIOS)
    assert seen == {name: EXPECTED[name] for name in SCENARIOS}


async def test_websocket_and_hang_up_on_a_real_server(client: ServerClient) -> None:
    """A websocket sees the session and g.user, and a client that hangs up cancels its route."""
    seen = await run_scenarios(client, WEBSOCKET_SCENARIOS)
    assert seen == {name: EXPECTED[name] for name in WEBSOCKET_SCENARIOS}
