"""The seed questions, answered by ``examples/`` under real hypercorn workers.

Each example is served by ``qapp serve`` with 4 worker processes, from inside
``examples/`` as its docstring says, once on a SQLite file and once on a
Redis server of the test's own; the tests of one example and one backend
share that server (each with keys of its own). Every example also has a
naive route, the answer the question expected; its test shows it failing
under the same workers.

A worker keeps the connections it accepted, so the requests that must meet
every worker go out on fresh connections; the examples name the worker
(its pid) in their answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qapp.testing import HypercornServer, RedisServer, fire, fresh_connections

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WORKERS = 4
BACKENDS = ["sqlite", "redis"]
#: Requests a sweep may send to meet every worker before it gives up.
SWEEP_CAP = 300


@contextlib.contextmanager
def serve(app: str, backend: str, folder: Path) -> Iterator[HypercornServer]:
    """``app`` under 4 workers, started from ``examples/``, its store on ``backend``."""
    with contextlib.ExitStack() as stack:
        if backend == "redis":
            store_url = stack.enter_context(RedisServer()).url
        else:
            store_url = f"sqlite://{folder / 'store.db'}"
        env = {
            "QAPP_STORE_URL": store_url,
            # Keep the examples' instance folder (users, secret) out of the checkout.
            "QAPP_INSTANCE_PATH": str(folder),
            "QAPP_SECRET_KEY": secrets.token_urlsafe(32),
        }
        server = HypercornServer(app=app, workers=WORKERS, env=env, cwd=EXAMPLES)
        yield stack.enter_context(server)


@pytest.fixture(scope="module", params=BACKENDS)
def cache_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HypercornServer]:
    with serve("shared_cache:app", request.param, tmp_path_factory.mktemp("cache")) as server:
        yield server


@pytest.fixture(scope="module", params=BACKENDS)
def counter_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HypercornServer]:
    with serve("unique_counter:app", request.param, tmp_path_factory.mktemp("counter")) as server:
        yield server


@pytest.fixture(scope="module", params=BACKENDS)
def user_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HypercornServer]:
    with serve("per_request_user:app", request.param, tmp_path_factory.mktemp("user")) as server:
        yield server


async def sweep(
    http: httpx.AsyncClient, method: str, url: str, *, least: int = 0
) -> list[httpx.Response]:
    """Send ``method url`` on fresh connections until every worker has answered.

    At least ``least`` requests go out; each answer names its worker.
    """
    answers: list[httpx.Response] = []
    seen: set[int] = set()
    while (len(seen) < WORKERS or len(answers) < least) and len(answers) < SWEEP_CAP:
        response = await http.request(method, url)
        answers.append(response)
        seen.add(response.json()["worker"])
    assert len(seen) == WORKERS, f"only workers {seen} answered {len(answers)} requests"
    return answers


def by_worker(answers: list[httpx.Response]) -> dict[int, list[httpx.Response]]:
    grouped: dict[int, list[httpx.Response]] = {}
    for response in answers:
        grouped.setdefault(response.json()["worker"], []).append(response)
    return grouped


def is_json_401(response: httpx.Response) -> bool:
    return (
        response.status_code == 401
        and response.headers["content-type"].startswith("application/json")
        and response.json()["error"] == "unauthorized"
    )


# -- 000: a cache that survives the request ----------------------------------------


async def test_cached_value_is_read_by_every_worker(cache_server: HypercornServer) -> None:
    """A value PUT once, on one worker, is read back by every worker."""
    page = {"html": "<h1>hello</h1>", "n": 1}
    async with fresh_connections(1) as http:
        put = await http.put(f"{cache_server.url}/cache/home", json=page)
        assert put.status_code == 200
        answers = await sweep(http, "GET", f"{cache_server.url}/cache/home")
    assert {r.status_code for r in answers} == {200}
    assert all(r.json()["value"] == page for r in answers)


async def test_cache_honours_its_ttl(cache_server: HypercornServer) -> None:
    """A value PUT with ?ttl= is gone from every worker once the ttl has passed."""
    url = f"{cache_server.url}/cache/short"
    async with fresh_connections(1) as http:
        assert (await http.put(f"{url}?ttl=1", json="soon gone")).status_code == 200
        assert (await http.get(url)).json()["value"] == "soon gone"
        await asyncio.sleep(1.2)
        answers = await sweep(http, "GET", url)
        assert {r.status_code for r in answers} == {404}
        assert (await http.put(f"{url}?ttl=0", json="x")).status_code == 400


async def test_module_dict_misses_on_other_workers(cache_server: HypercornServer) -> None:
    """The naive module-level dict holds a value only in the worker that took the PUT."""
    async with fresh_connections(1) as http:
        put = await http.put(f"{cache_server.url}/naive/home", json="only here")
        filled = put.json()["worker"]
        answers = await sweep(http, "GET", f"{cache_server.url}/naive/home")
    for worker, got in by_worker(answers).items():
        expected = 200 if worker == filled else 404
        assert {r.status_code for r in got} == {expected}, worker
    assert sum(r.status_code == 404 for r in answers) >= 1


# -- 001: unique numbers, and a counter per client ------------------------------------


async def test_store_counter_gives_unique_numbers(counter_server: HypercornServer) -> None:
    """200 concurrent POST /number on 4 workers get the numbers 1..200, each exactly once."""
    report = await fire(
        f"{counter_server.url}/number", requests=200, concurrency=100, value="number"
    )
    assert report.statuses == {200: 200}
    assert report.repeated == 0
    assert report.distinct == 200
    assert sorted(report.values) == list(range(1, 201))
    assert len(report.workers) > 1


async def test_global_counter_repeats_numbers(counter_server: HypercornServer) -> None:
    """The naive global counter hands one number to several clients, even within one worker."""
    report = await fire(
        f"{counter_server.url}/naive-number", requests=200, concurrency=100, value="number"
    )
    assert report.statuses == {200: 200}
    assert len(report.workers) > 1
    assert report.repeated > 0
    # Not only one copy per worker: the await between read and write lets
    # requests on one worker read the same value too.
    per_worker: dict[int, list[int]] = {}
    for answer in report.ok:
        per_worker.setdefault(answer.worker, []).append(answer.value)
    assert any(len(numbers) > len(set(numbers)) for numbers in per_worker.values())


async def test_session_counter_adds_exactly_once_per_request(
    counter_server: HypercornServer,
) -> None:
    """100 concurrent /inc with one cookie add exactly 100 to that client's counter."""
    base = counter_server.url
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        assert (await client.post("/inc")).json() == {"counter": 1}
        report = await fire(
            f"{base}/inc",
            requests=100,
            concurrency=100,
            value="counter",
            cookies=dict(client.cookies),
        )
        assert report.statuses == {200: 100}
        assert sorted(report.values) == list(range(2, 102))
        assert (await client.get("/")).json() == {"counter": 101}


async def test_session_counter_is_per_client(counter_server: HypercornServer) -> None:
    """A second client's counter starts at 0 and moves alone; /dec counts down."""
    base = counter_server.url
    async with (
        httpx.AsyncClient(base_url=base, timeout=30) as one,
        httpx.AsyncClient(base_url=base, timeout=30) as two,
    ):
        for _ in range(3):
            await one.post("/inc")
        assert (await two.get("/")).json() == {"counter": 0}
        assert "session" not in two.cookies  # reading creates no session
        assert (await two.post("/inc")).json() == {"counter": 1}
        assert (await one.post("/dec")).json() == {"counter": 2}
        assert (await two.post("/dec")).json() == {"counter": 0}
        assert (await one.get("/")).json() == {"counter": 2}


# -- 002: a connection per worker, a user per request ---------------------------------


async def login(http: httpx.AsyncClient, url: str, password: str = "lovelace") -> httpx.Response:
    return await http.post(f"{url}/login", json={"username": "ada", "password": password})


async def test_connection_is_opened_once_per_worker(user_server: HypercornServer) -> None:
    """Every worker answers /me for the logged-in user on a connection it opened once."""
    async with fresh_connections(1) as http:
        assert (await login(http, user_server.url)).json() == {"user": {"name": "ada"}}
        answers = await sweep(http, "GET", f"{user_server.url}/me", least=40)
    assert {r.status_code for r in answers} == {200}
    assert all(r.json()["user"] == {"name": "ada"} for r in answers)
    assert {r.json()["connection_opened"] for r in answers} == {1}


async def test_login_required_without_a_user(user_server: HypercornServer) -> None:
    """A wrong password and /me without a login both answer a JSON 401."""
    async with fresh_connections(1) as http:
        assert is_json_401(await login(http, user_server.url, password="wrong"))
        assert is_json_401(await http.get(f"{user_server.url}/me"))


async def test_logout_ends_the_login(user_server: HypercornServer) -> None:
    """After logout /me answers 401, even to a replay of the old cookie."""
    async with fresh_connections(1) as http:
        await login(http, user_server.url)
        assert (await http.get(f"{user_server.url}/me")).status_code == 200
        old: dict[str, Any] = dict(http.cookies)
        assert (await http.post(f"{user_server.url}/logout")).status_code == 200
        assert is_json_401(await http.get(f"{user_server.url}/me"))
    async with fresh_connections(1) as replay:
        replay.cookies.update(old)
        assert is_json_401(await replay.get(f"{user_server.url}/me"))


async def test_g_is_wiped_between_requests(user_server: HypercornServer) -> None:
    """What one request puts in g is gone in the next, even on the same worker."""
    async with httpx.AsyncClient(base_url=user_server.url, timeout=30) as kept_alive:
        remembered = (await kept_alive.post("/naive/remember", json="note")).json()
        recalled = (await kept_alive.get("/naive/recall")).json()
    assert remembered["remembered"] == "note"
    assert recalled["worker"] == remembered["worker"]
    assert recalled["remembered"] is None
