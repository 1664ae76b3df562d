"""The memo: an expensive value computed once, with one flight however many ask at once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart

from qapp import create_app
from qapp.ext import fastpath
from qapp.service.memo import memo_of
from qapp.state import LockTimeout, Store
from tests.storedump import (
    assert_json_error,
    assert_refused_unchanged,
    client_with_dead_store,
)


async def _client_for(app: Quart) -> AsyncIterator[httpx.AsyncClient]:
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            yield c


def _tuned_app(url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Quart:
    settings: dict[str, Any] = getattr(request, "param", {})
    return create_app({"STORE_URL": url, "INSTANCE_PATH": str(tmp_path), **settings})


@pytest.fixture
async def tuned(
    store_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Quart, httpx.AsyncClient]]:
    """An app on each backend with the memo settings given as the indirect parameter."""
    app = _tuned_app(store_url, tmp_path, request)
    async for c in _client_for(app):
        yield app, c


@pytest.fixture
async def shared_tuned(
    shared_store_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Quart, httpx.AsyncClient]]:
    """As ``tuned``, on the backends whose locks have a lease (SQLite and Redis).

    A memory store's lock dies with its process, so it has no dead holder to outlive.
    """
    app = _tuned_app(shared_store_url, tmp_path, request)
    async for c in _client_for(app):
        yield app, c


def memo_home(app: Quart, key: str) -> tuple[Store, str]:
    """Where the memo keeps ``key``: its namespace of the cache store, and the key's name there.

    The value is ``v:<name>``, the count ``n:<name>``, and the lock is ``<name>``.
    Call it inside an app context.
    """
    memo = memo_of(app)
    return memo.store(), memo.key(key)


@contextlib.asynccontextmanager
async def dead_computer(app: Quart, lease: float) -> AsyncIterator[None]:
    """The memo lock of key ``k`` held, with ``lease``, by a computer that never finishes."""
    async with app.app_context():
        store, name = memo_home(app, "k")
        held = store.lock(name, timeout=lease, wait=0)
        await held.__aenter__()
    try:
        yield
    finally:
        async with app.app_context():
            await held.__aexit__(None, None, None)


async def test_first_computes_then_cached(client: httpx.AsyncClient) -> None:
    """The first answer computes (cached false, 1 computation); the next is cached."""
    began = time.monotonic()
    first = (await client.get("/memo/alpha")).json()
    took = time.monotonic() - began
    assert took >= 0.2  # the work is really expensive
    assert first["key"] == "alpha"
    assert first["cached"] is False
    assert first["computations"] == 1
    assert first["value"]["sha256"] == hashlib.sha256(b"alpha").hexdigest()
    assert first["value"]["worker"] == os.getpid()
    second = (await client.get("/memo/alpha")).json()
    assert second == {**first, "cached": True}


async def test_keys_are_independent(client: httpx.AsyncClient) -> None:
    """Each key is computed once on its own."""
    a = (await client.get("/memo/a")).json()
    b = (await client.get("/memo/b")).json()
    assert (a["cached"], b["cached"]) == (False, False)
    assert a["value"]["sha256"] != b["value"]["sha256"]
    assert (a["computations"], b["computations"]) == (1, 1)


async def test_hundred_concurrent_first_requests_compute_once(client: httpx.AsyncClient) -> None:
    """100 concurrent first requests get one value from one computation; one says cached false."""
    answers = await asyncio.gather(*(client.get("/memo/burst") for _ in range(100)))
    bodies = [a.json() for a in answers]
    assert all(a.status_code == 200 for a in answers)
    assert [b["cached"] for b in bodies].count(False) == 1
    assert {b["computations"] for b in bodies} == {1}
    assert len({b["value"]["computed_at"] for b in bodies}) == 1


@pytest.mark.parametrize("tuned", [{"MEMO_TTL": 0.3}], indirect=True)
async def test_expired_value_is_computed_again_and_counted_afresh(
    tuned: tuple[Quart, httpx.AsyncClient],
) -> None:
    """After MEMO_TTL the value is recomputed; its count expired with it, so it starts over."""
    _, c = tuned
    first = (await c.get("/memo/k")).json()
    await asyncio.sleep(0.5)
    second = (await c.get("/memo/k")).json()
    third = (await c.get("/memo/k")).json()
    assert (first["computations"], first["cached"]) == (1, False)
    assert (second["computations"], second["cached"]) == (1, False)
    assert second["value"]["computed_at"] > first["value"]["computed_at"]
    assert (third["computations"], third["cached"], third["value"]) == (1, True, second["value"])


@pytest.mark.parametrize("tuned", [{"MEMO_WAIT": 0.3}], indirect=True)
async def test_waiter_gives_up_with_503_when_computer_is_gone(
    tuned: tuple[Quart, httpx.AsyncClient],
) -> None:
    """A lock held by a computer that never finishes makes waiters answer 503 after MEMO_WAIT."""
    app, c = tuned
    async with dead_computer(app, lease=30):
        began = time.monotonic()
        response = await c.get("/memo/k")
        waited = time.monotonic() - began
    assert 0.3 <= waited < 2
    assert_json_error(response, 503, "busy")
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize("shared_tuned", [{"MEMO_WAIT": 3.0}], indirect=True)
async def test_waiter_takes_over_when_dead_computers_lease_lapses(
    shared_tuned: tuple[Quart, httpx.AsyncClient],
) -> None:
    """Once a dead computer's lease lapses, a waiter computes the value itself."""
    app, c = shared_tuned
    async with dead_computer(app, lease=0.4):
        began = time.monotonic()
        body = (await c.get("/memo/k")).json()
        waited = time.monotonic() - began
    assert (body["cached"], body["computations"]) == (False, 1)
    assert waited >= 0.4 + 0.2  # the lease, then the work


async def test_computation_holds_the_memo_lock(client: httpx.AsyncClient, app: Quart) -> None:
    """While a value is computed, its key's store lock is held, and released afterwards.

    The guard is the store's token-checked lock, so a computer that outlived
    its lease cannot release a lock that a waiter has taken over since.
    """
    computing = asyncio.create_task(client.get("/memo/k"))
    await asyncio.sleep(0.1)  # inside the 0.2 s of work
    async with app.app_context():
        store, name = memo_home(app, "k")
        with pytest.raises(LockTimeout):
            async with store.lock(name, wait=0):
                pass
    assert (await computing).json()["cached"] is False
    async with app.app_context(), store.lock(name, wait=0):
        pass


async def test_disconnected_computer_releases_the_guard(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """A computing request whose client disconnects frees the guard; nobody waits out the lease."""
    # The fast path watches a bodiless request's client once it has run
    # WATCH_AFTER: the work outlasts that, and the client leaves after it.
    app.config["QAPP_MEMO_WORK"] = fastpath.WATCH_AFTER + 0.5
    events: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(0.1)  # inside the work, holding the guard
        async with app.app_context():
            store, name = memo_home(app, "k")
            with pytest.raises(LockTimeout):  # the computer holds the lock
                async with store.lock(name, wait=0):
                    pass
        return {"type": "http.disconnect"}  # as hypercorn reports a closed connection

    async def send(event: dict[str, Any]) -> None:
        events.append(event)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/memo/k",
        "raw_path": b"/memo/k",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"qapp.test")],
        "client": ("127.0.0.1", 50000),
        "server": ("qapp.test", 80),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert events == []  # cancelled before it could answer
    async with app.app_context():
        store, name = memo_home(app, "k")
        async with store.lock(name, wait=0):
            pass  # released, not left to its lease
        assert await store.get(f"n:{name}") is None
    began = time.monotonic()
    body = (await client.get("/memo/k")).json()
    assert time.monotonic() - began < 2  # well under the 5 s lease
    assert (body["cached"], body["computations"]) == (False, 1)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/memo/" + "a" * 201, {}, 400),
        ("GET", "/memo/a%20b", {}, 400),
        ("GET", "/memo/a/b", {}, 400),
        ("GET", "/memo/", {}, 404),
        ("POST", "/memo/k", {"json": 1}, 405),
        ("PUT", "/memo/k", {"json": 1}, 405),
        ("DELETE", "/memo/k", {}, 405),
        ("POST", "/memo/k", {"content": "{", "headers": {"content-type": "application/json"}}, 405),
    ],
)
async def test_bad_requests_change_nothing(
    client: httpx.AsyncClient,
    app: Quart,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    """Bad keys and wrong methods get a JSON 4xx and compute nothing."""
    await assert_refused_unchanged(app, client, method, path, status, **kwargs)


async def test_store_down_is_json_503(tmp_path: Path) -> None:
    """With the cache store down the memo answers a JSON 503, and computes nothing."""
    async with client_with_dead_store(tmp_path, CACHE_STORE_URL="dead") as (_, c):
        assert_json_error(await c.get("/memo/k"), 503, "store_unavailable")


async def test_new_keys_per_client_have_a_quota(store_url: str, tmp_path: Path) -> None:
    """One client may make so many new memo keys (MEMO_QUOTA); kept keys stay free to read."""
    app = create_app(
        {"STORE_URL": store_url, "INSTANCE_PATH": str(tmp_path), "MEMO_QUOTA": "3/hour"}
    )
    async for client in _client_for(app):
        statuses = [(await client.get(f"/memo/k{n}")).status_code for n in range(4)]
        assert statuses == [200, 200, 200, 429]
        again = [(await client.get(f"/memo/k{n}")).status_code for n in range(3)]
        assert again == [200, 200, 200]
        async with app.app_context():
            assert await memo_of(app).computations("k3") == 0  # refused: nothing computed


async def test_lab_work_shares_the_memo_quota(store_url: str, tmp_path: Path) -> None:
    """The lab's stampede rows spend the memo's quota of new keys: no route is a side door."""
    app = create_app(
        {
            "STORE_URL": store_url,
            "INSTANCE_PATH": str(tmp_path),
            "MEMO_QUOTA": "3/hour",
            "LAB_WORK": 0,
        }
    )
    async for client in _client_for(app):
        new = ["/memo/k0", "/lab/stampede/cached/c0", "/lab/stampede/naive/n0"]
        assert [(await client.get(path)).status_code for path in new] == [200, 200, 200]
        for path in ("/memo/k1", "/lab/stampede/cached/c1", "/lab/stampede/naive/n1"):
            assert_json_error(await client.get(path), 429)
        assert [(await client.get(path)).status_code for path in new] == [200, 200, 200]
        for strategy, key in (("cached", "c1"), ("naive", "n1")):
            counted = await client.get(f"/lab/stampede/{strategy}/{key}/computations")
            assert counted.json()["computations"] == 0  # refused: nothing computed
