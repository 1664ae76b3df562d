"""User and shared state on a real deployment: hypercorn, 4 worker processes, one SQLite file.

One server serves every test here (each uses its own names and keys), so
the cost of starting 4 workers is paid once. Requests that must reach
particular workers go out on fresh connections: a worker keeps the
connections it accepted, so a new connection is the way to meet another
worker, and ``/health`` on that same connection says which one it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from qapp.testing import HypercornServer
from tests.conftest import NO_LIMITS_ENV

pytestmark = pytest.mark.slow

WORKERS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypercornServer]:
    """4 hypercorn workers on the default SQLite store, with a key they generate themselves."""
    instance: Path = tmp_path_factory.mktemp("instance")
    env = {
        "QAPP_INSTANCE_PATH": str(instance),
        "QAPP_STORE_URL": "",
        "QAPP_SECRET_KEY": "",
        **NO_LIMITS_ENV,
    }
    # `pinned` opens its connections one by one and uses them afterwards; on a
    # busy machine that can take longer than the config's 5 s keep-alive, and a
    # connection the server has closed meanwhile fails its request.
    with HypercornServer(workers=WORKERS, env=env, keep_alive=120) as running:
        yield running


async def on_fresh_connection(
    server: HypercornServer,
    method: str,
    path: str,
    cookies: dict[str, str] | None = None,
    json: object = None,
) -> tuple[int, httpx.Response]:
    """Send one request on a new connection; return the answering worker's pid and the answer."""
    async with httpx.AsyncClient(base_url=server.url, cookies=cookies, timeout=30) as c:
        pid = (await c.get("/health")).json()["worker"]
        response = await c.request(method, path, json=json)
    return pid, response


@contextlib.asynccontextmanager
async def pinned(
    server: HypercornServer, n: int, cookies: dict[str, str] | None = None
) -> AsyncIterator[list[tuple[int, httpx.AsyncClient]]]:
    """``n`` open connections, each with the pid of its worker, covering at least 2 workers.

    They are opened one after another (which spreads them over the workers)
    and used afterwards all at once, so a burst is concurrent *and* known to
    reach several workers.
    """
    async with contextlib.AsyncExitStack() as stack:
        clients: list[tuple[int, httpx.AsyncClient]] = []
        for _ in range(4 * n):
            c = await stack.enter_async_context(
                httpx.AsyncClient(base_url=server.url, cookies=cookies, timeout=30)
            )
            pid = (await c.get("/health")).json()["worker"]
            if len(clients) < n or pid not in {p for p, _ in clients}:
                clients.append((pid, c))
            if len(clients) >= n and len({p for p, _ in clients[-n:]}) > 1:
                break
        clients = clients[-n:]
        assert len({p for p, _ in clients}) > 1, "every connection went to one worker"
        yield clients


def session_cookie(response: httpx.Response) -> dict[str, str]:
    """The session cookie a response set, as a cookies mapping."""
    value = response.cookies.get("session")
    assert value, "no session cookie set"
    return {"session": value}


def test_every_worker_is_up(server: HypercornServer) -> None:
    """The fixture really runs 4 distinct worker processes."""
    pids = {server.worker_pid() for _ in range(200)}
    assert len(pids - {None}) == WORKERS


async def test_login_on_one_worker_is_seen_by_all(server: HypercornServer) -> None:
    """After login on one worker, /auth/me answers for the user on all 4 (one signing key)."""
    name = f"u{uuid.uuid4().hex[:12]}"
    creds = {"username": name, "password": "password of " + name}
    _, registered = await on_fresh_connection(server, "POST", "/auth/register", json=creds)
    assert registered.status_code == 201
    login_pid, login = await on_fresh_connection(server, "POST", "/auth/login", json=creds)
    assert login.status_code == 200
    cookies = session_cookie(login)
    answered: set[int] = set()
    for _ in range(100):
        pid, me = await on_fresh_connection(server, "GET", "/auth/me", cookies)
        assert me.status_code == 200, (pid, me.text)
        assert me.json() == {"username": name}
        answered.add(pid)
        if len(answered) == WORKERS:
            break
    assert len(answered) == WORKERS
    assert login_pid in answered


async def test_two_clients_keep_separate_counters(server: HypercornServer) -> None:
    """Two cookies, incremented concurrently on all workers, keep their own counts."""
    _, first_a = await on_fresh_connection(server, "POST", "/session/counter/inc")
    _, first_b = await on_fresh_connection(server, "POST", "/session/counter/dec")
    a, b = session_cookie(first_a), session_cookie(first_b)
    await asyncio.gather(
        *(on_fresh_connection(server, "POST", "/session/counter/inc", a) for _ in range(20)),
        *(on_fresh_connection(server, "POST", "/session/counter/dec", b) for _ in range(10)),
    )
    _, read_a = await on_fresh_connection(server, "GET", "/session/counter", a)
    _, read_b = await on_fresh_connection(server, "GET", "/session/counter", b)
    assert read_a.json() == {"counter": 21}
    assert read_b.json() == {"counter": -11}


async def test_hundred_concurrent_incs_from_one_cookie(server: HypercornServer) -> None:
    """100 concurrent inc with one cookie, on connections to several workers, add exactly 100."""
    _, reset = await on_fresh_connection(server, "POST", "/session/counter/reset")
    cookies = session_cookie(reset)  # the client exists before the burst
    async with pinned(server, 100, cookies) as clients:
        results = await asyncio.gather(*(c.post("/session/counter/inc") for _, c in clients))
    assert all(r.status_code == 200 for r in results)
    assert all("session" not in r.cookies for r in results)  # nobody forked a session
    assert sorted(r.json()["counter"] for r in results) == list(range(1, 101))
    _, final = await on_fresh_connection(server, "GET", "/session/counter", cookies)
    assert final.json() == {"counter": 100}


async def test_memo_computes_once_across_workers(server: HypercornServer) -> None:
    """100 concurrent first requests for a memo, on several workers, compute it once."""
    key = f"memo-{uuid.uuid4().hex}"
    async with pinned(server, 100) as clients:
        results = await asyncio.gather(*(c.get(f"/memo/{key}") for _, c in clients))
    assert [r.status_code for r in results] == [200] * 100, [r.text for r in results][:3]
    bodies = [r.json() for r in results]
    assert [b["cached"] for b in bodies].count(False) == 1, bodies
    assert {b["computations"] for b in bodies} == {1}
    assert len({(b["value"]["worker"], b["value"]["computed_at"]) for b in bodies}) == 1


async def test_concurrent_registrations_one_wins(server: HypercornServer) -> None:
    """20 concurrent registrations of one name across workers: one 201 and nineteen 409."""
    name = f"r{uuid.uuid4().hex[:12]}"
    async with pinned(server, 20) as clients:
        results = await asyncio.gather(
            *(
                c.post("/auth/register", json={"username": name, "password": f"pass{i:05}"})
                for i, (_, c) in enumerate(clients)
            )
        )
    assert sorted(r.status_code for r in results) == [201] + [409] * 19


async def test_tampered_cookie_is_a_new_session(server: HypercornServer) -> None:
    """A cookie with a changed signature is a new client on every worker, never an error."""
    _, first = await on_fresh_connection(server, "POST", "/session/counter/inc")
    value = session_cookie(first)["session"]
    payload, _, signature = value.rpartition(".")
    # The first character: the last one of a base64 signature may carry only
    # padding bits, and changing those changes nothing.
    tampered = {"session": f"{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"}
    for _ in range(8):
        _, read = await on_fresh_connection(server, "GET", "/session/counter", tampered)
        assert read.json() == {"counter": 0}
    _, inc = await on_fresh_connection(server, "POST", "/session/counter/inc", tampered)
    assert inc.json() == {"counter": 1}
    assert session_cookie(inc)["session"] != tampered["session"]


async def test_cookie_replayed_after_logout_is_401(server: HypercornServer) -> None:
    """Logout on one worker kills the session for all: the replayed cookie gets 401 everywhere."""
    name = f"l{uuid.uuid4().hex[:12]}"
    creds = {"username": name, "password": "password of " + name}
    await on_fresh_connection(server, "POST", "/auth/register", json=creds)
    _, login = await on_fresh_connection(server, "POST", "/auth/login", json=creds)
    cookies = session_cookie(login)
    _, out = await on_fresh_connection(server, "POST", "/auth/logout", cookies)
    assert out.status_code == 204
    answered = set()
    for _ in range(40):
        pid, me = await on_fresh_connection(server, "GET", "/auth/me", cookies)
        assert me.status_code == 401
        answered.add(pid)
    assert len(answered) > 1


async def test_cache_is_shared_by_all_workers(server: HypercornServer) -> None:
    """A value put through one worker is read, then deleted, through the others."""
    key = f"c{uuid.uuid4().hex}"
    put_pid, put = await on_fresh_connection(server, "PUT", f"/cache/{key}", json={"n": 1})
    assert put.status_code == 204
    readers = set()
    for _ in range(60):
        pid, got = await on_fresh_connection(server, "GET", f"/cache/{key}")
        assert got.json() == {"key": key, "value": {"n": 1}}, (pid, put_pid, got.text)
        readers.add(pid)
        if len(readers - {put_pid}) >= 2:
            break
    assert len(readers - {put_pid}) >= 2, (readers, put_pid)
    _, deleted = await on_fresh_connection(server, "DELETE", f"/cache/{key}")
    assert deleted.status_code == 204
    gone = await asyncio.gather(
        *(on_fresh_connection(server, "GET", f"/cache/{key}") for _ in range(8))
    )
    assert {r.status_code for _, r in gone} == {404}
