"""The session counter: per client, server-side, and exact under concurrent requests."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from quart import Quart

from tests.storedump import assert_refused_unchanged, cookie_of, snapshot

JSON = {"content-type": "application/json"}
TEXT = {"content-type": "text/plain"}


def _second_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Another client of the same app, with a cookie jar of its own."""
    return httpx.AsyncClient(transport=client._transport, base_url=client.base_url)


async def test_new_client_reads_zero_and_gets_no_session(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """GET on a new client answers 0 without creating a session or setting a cookie."""
    before = await snapshot(app)
    response = await client.get("/session/counter")
    assert response.json() == {"counter": 0}
    assert cookie_of(response) is None
    assert await snapshot(app) == before


async def test_inc_dec_reset(client: httpx.AsyncClient) -> None:
    """inc, dec and reset change this client's counter and answer the new value."""
    assert (await client.post("/session/counter/inc")).json() == {"counter": 1}
    assert (await client.post("/session/counter/inc")).json() == {"counter": 2}
    assert (await client.post("/session/counter/dec")).json() == {"counter": 1}
    assert (await client.get("/session/counter")).json() == {"counter": 1}
    assert (await client.post("/session/counter/reset")).json() == {"counter": 0}
    assert (await client.post("/session/counter/dec")).json() == {"counter": -1}
    assert (await client.get("/session/counter")).json() == {"counter": -1}


async def test_first_change_sets_cookie_once(client: httpx.AsyncClient) -> None:
    """The first inc sets the session cookie; later requests reuse it without a new one."""
    first = await client.post("/session/counter/inc")
    assert cookie_of(first) is not None
    second = await client.post("/session/counter/inc")
    assert cookie_of(second) is None
    assert second.json() == {"counter": 2}


async def test_two_clients_keep_separate_counters(client: httpx.AsyncClient) -> None:
    """Each cookie has its own counter."""
    async with _second_client(client) as other:
        for _ in range(3):
            await client.post("/session/counter/inc")
        await other.post("/session/counter/dec")
        assert (await client.get("/session/counter")).json() == {"counter": 3}
        assert (await other.get("/session/counter")).json() == {"counter": -1}


async def test_hundred_concurrent_incs_from_one_cookie_add_exactly_100(
    client: httpx.AsyncClient,
) -> None:
    """100 concurrent inc with one cookie add exactly 100, each answer a distinct number."""
    await client.post("/session/counter/reset")  # the cookie exists before the burst
    answers = await asyncio.gather(*(client.post("/session/counter/inc") for _ in range(100)))
    assert all(cookie_of(a) is None for a in answers)  # nobody forked a new session
    assert sorted(a.json()["counter"] for a in answers) == list(range(1, 101))
    assert (await client.get("/session/counter")).json() == {"counter": 100}


async def test_concurrent_first_requests_without_cookie_are_separate_clients(
    client: httpx.AsyncClient,
) -> None:
    """Requests sent before any cookie exists each start a session: nothing joins them."""
    transport = client._transport
    async with httpx.AsyncClient(transport=transport, base_url=client.base_url) as fresh:
        answers = await asyncio.gather(*(fresh.post("/session/counter/inc") for _ in range(10)))
    assert [a.json() for a in answers] == [{"counter": 1}] * 10
    assert len({cookie_of(a) for a in answers}) == 10


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/session/counter/inc", {"content": "{", "headers": JSON}, 400),
        ("POST", "/session/counter/inc", {"content": "1", "headers": TEXT}, 415),
        ("POST", "/session/counter/dec", {"data": {"a": "1"}}, 415),
        ("POST", "/session/counter/reset", {"content": b"1" * 70_000, "headers": JSON}, 413),
        ("GET", "/session/counter/inc", {}, 405),
        ("PUT", "/session/counter", {"json": 5}, 405),
        ("DELETE", "/session/counter", {}, 405),
        ("POST", "/session/counter/add", {}, 404),
    ],
)  # fmt: skip
async def test_bad_requests_change_nothing(
    client: httpx.AsyncClient,
    app: Quart,
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
) -> None:
    """Bad bodies, methods and paths get a JSON 4xx and leave counter and store unchanged."""
    await client.post("/session/counter/inc")
    await assert_refused_unchanged(app, client, method, path, status, None, **kwargs)
    assert (await client.get("/session/counter")).json() == {"counter": 1}
