"""Sliding-window rate limits, several limits per route, default limits and their exemptions.

The store-level rule (:mod:`qapp.store.ratelimit`) on every backend; the
route features on :mod:`tests.ratelimit_app`, driven through Quart's test
client and through httpx; the boundary burst also on real ``qapp serve``
workers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart

from qapp.state import ConfigurationError, Store
from qapp.store.ratelimit import Limit, count, hit_sliding, parse_limits, refund
from qapp.testing import HypercornServer, RedisServer
from tests.ratelimit_app import create_app

ROOT = Path(__file__).resolve().parents[1]


async def _before_a_boundary(period: float, lead: float) -> float:
    """Wait until ``lead`` seconds before a window boundary; return the boundary's time."""
    left = period - time.time() % period
    if left < lead + 0.2:
        await asyncio.sleep(left)
        left = period - time.time() % period
    await asyncio.sleep(left - lead)
    return time.time() + lead


async def _clear_of_a_boundary(period: float, room: float = 3.0) -> None:
    """Wait, if need be, until ``room`` seconds of the current window remain ahead."""
    left = period - time.time() % period
    if left < room:
        await asyncio.sleep(left + 0.05)


async def _straddle(
    fire: Callable[[], Awaitable[int]], period: float, lead: float = 1.0
) -> tuple[int, int]:
    """Fire one burst ``lead`` seconds before a window boundary and one just after it.

    ``fire`` sends a burst and says how many of it were allowed.
    """
    boundary = await _before_a_boundary(period, lead)
    before = await fire()
    await asyncio.sleep(max(0.0, boundary + 0.02 - time.time()))
    after = await fire()
    return before, after


# The store-level rule, on every backend.


def test_several_limits_parse() -> None:
    """``;`` or ``,`` separates limits, each parsed alone; an empty text is an error."""
    assert parse_limits("10/second;100/minute") == (Limit(10, 1), Limit(100, 60))
    assert parse_limits("10/second, 100/minute") == (Limit(10, 1), Limit(100, 60))
    with pytest.raises(ConfigurationError):
        parse_limits(" ; ")
    with pytest.raises(ConfigurationError):
        parse_limits("10/second;lots")


async def test_sliding_boundary_burst_lets_n_through(store: Store) -> None:
    """N events just before a window boundary and N just after: N allowed in all, not 2N."""
    limit = Limit(10, 4.0)

    async def fire() -> int:
        verdicts = await asyncio.gather(*(hit_sliding(store, "edge", limit) for _ in range(10)))
        return sum(v.allowed for v in verdicts)

    before, after = await _straddle(fire, limit.period)
    assert (before, after) == (10, 0)


async def test_fixed_window_lets_the_boundary_burst_through_twice(store: Store) -> None:
    """The fixed window, for contrast: N before a boundary and N after are all allowed."""
    limit = Limit(10, 4.0)

    async def fire() -> int:
        verdicts = await asyncio.gather(
            *(count(store, "edge", limit, strategy="fixed") for _ in range(10))
        )
        return sum(v.allowed for v in verdicts)

    assert await _straddle(fire, limit.period) == (10, 10)


async def test_sliding_concurrent_hits_allow_exactly_n_and_count_no_refusal(store: Store) -> None:
    """200 concurrent events against 50: exactly 50 allowed, and the refused left no count."""
    limit = Limit(50, 60)
    await _clear_of_a_boundary(limit.period)
    verdicts = await asyncio.gather(*(hit_sliding(store, "burst", limit) for _ in range(200)))
    assert sum(v.allowed for v in verdicts) == 50
    assert all(v.counted == 0 and v.retry_after >= 1 for v in verdicts if not v.allowed)
    counter = next(v.counter for v in verdicts)
    assert await store.get(counter) == 50


async def test_sliding_refund_gives_back_only_what_was_counted(store: Store) -> None:
    """A refund restores an allowed event's budget; refunding a refused one changes nothing."""
    limit = Limit(2, 60)
    await _clear_of_a_boundary(limit.period)
    first = await hit_sliding(store, "login", limit)
    second = await hit_sliding(store, "login", limit)
    refused = await hit_sliding(store, "login", limit)
    assert (first.allowed, second.allowed, refused.allowed) == (True, True, False)
    await refund(store, refused)
    assert not (await hit_sliding(store, "login", limit)).allowed
    await refund(store, second)
    again = await hit_sliding(store, "login", limit)
    assert again.allowed
    assert again.remaining == 0


async def test_a_cost_beyond_the_limit_is_an_error(store: Store) -> None:
    """An event that costs more than the whole limit can never fit: ValueError, nothing counted."""
    with pytest.raises(ValueError, match="never fit"):
        await hit_sliding(store, "big", Limit(2, 60), cost=3)


# The route features, in process.


@dataclass
class Answer:
    """What a test needs of an answer, whichever client got it."""

    status: int
    headers: httpx.Headers
    body: Any


Get = Callable[[str], Awaitable[Answer]]


def _app(tmp_path: Path, **config: Any) -> Quart:
    settings = {"QAPP_STORE_URL": f"sqlite://{tmp_path / 'limits.db'}"}
    settings.update({f"QAPP_{k}": v for k, v in config.items()})
    return create_app(tmp_path, settings)


async def _client(app: Quart, kind: str) -> AsyncIterator[Get]:
    """``get(path)`` through Quart's test client or through httpx, in ``app.test_app()``."""
    async with app.test_app():
        if kind == "quart":
            client = app.test_client()

            async def get_quart(path: str) -> Answer:
                response = await client.get(path)
                headers = httpx.Headers(list(response.headers.items()))
                return Answer(response.status_code, headers, await response.get_json())

            yield get_quart
            return
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:

            async def get_httpx(path: str) -> Answer:
                response = await http.get(path)
                return Answer(response.status_code, response.headers, response.json())

            yield get_httpx


@pytest.fixture(params=["quart", "httpx"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which test client drives the app."""
    kind_name: str = request.param
    return kind_name


@pytest.fixture
async def get(tmp_path: Path, kind: str) -> AsyncIterator[Get]:
    """The app with its default settings (no default limit)."""
    async for each in _client(_app(tmp_path), kind):
        yield each


async def _statuses(get: Get, path: str, times: int) -> list[int]:
    return [(await get(path)).status for _ in range(times)]


async def test_the_tightest_of_several_limits_decides(get: Get) -> None:
    """``5/minute;3/hour``: the hour's 3 decide, and the headers name both limits."""
    answers = [await get("/tiers") for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 429]
    first = answers[0].headers
    assert first["RateLimit-Limit"] == "3"
    assert first["RateLimit-Remaining"] == "2"
    assert first["RateLimit-Policy"] == '"3/3600s";q=3;w=3600, "5/60s";q=5;w=60'
    assert first["RateLimit"].startswith('"3/3600s";r=2;t=')
    assert ', "5/60s";r=4;t=' in first["RateLimit"]
    refused = answers[3]
    assert refused.body["error"] == "too_many_requests"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit"].startswith('"3/3600s";r=0;t=')


async def test_stacked_limits_count_apart(get: Get) -> None:
    """``100/minute`` stacked over ``3/minute``: 3 requests go through, not 1."""
    assert await _statuses(get, "/stacked", 4) == [200, 200, 200, 429]


async def test_headers_follow_the_ratelimit_draft(get: Get) -> None:
    """An answer has RateLimit-Policy and RateLimit as structured fields; a 429 Retry-After."""
    answers = [await get("/strict") for _ in range(2)]
    allowed, refused = answers
    assert allowed.status == 200
    assert allowed.headers["RateLimit-Policy"] == '"1/60s";q=1;w=60'
    name, remaining, reset = allowed.headers["RateLimit"].split(";")
    assert (name, remaining) == ('"1/60s"', "r=0")
    # The one event slides out of the estimate by the end of the next window.
    wait = int(reset.removeprefix("t="))
    assert 0 < wait <= 120
    assert refused.status == 429
    assert abs(int(refused.headers["Retry-After"]) - wait) <= 1


async def test_a_refund_gives_back_every_limit_of_a_check(get: Get) -> None:
    """A check of two sliding limits, refunded each time: the budget of both stays whole."""
    answers = [await get("/refunded") for _ in range(4)]
    assert [a.status for a in answers] == [200] * 4
    assert [a.body["remaining"] for a in answers] == [0] * 4
    assert answers[-1].headers["RateLimit-Policy"] == '"1/60s";q=1;w=60, "2/3600s";q=2;w=3600'


async def test_no_default_limit_unless_configured(get: Get) -> None:
    """Without QAPP_RATELIMIT_DEFAULT a route with no limit of its own is not limited."""
    answers = [await get("/open") for _ in range(5)]
    assert [a.status for a in answers] == [200] * 5
    assert "RateLimit" not in answers[0].headers


async def test_the_default_limit_and_its_exemptions(tmp_path: Path, kind: str) -> None:
    """QAPP_RATELIMIT_DEFAULT limits every route but the exempt ones and those with their own."""
    async for get in _client(_app(tmp_path, RATELIMIT_DEFAULT="2/minute"), kind):
        assert await _statuses(get, "/open", 3) == [200, 200, 429]
        assert await _statuses(get, "/exempt", 4) == [200] * 4
        assert await _statuses(get, "/bp/free", 4) == [200] * 4
        assert await _statuses(get, "/own", 6) == [200] * 5 + [429]
        # Each route has a default budget of its own.
        assert await _statuses(get, "/tiers", 1) == [200]


async def test_limits_turned_off(tmp_path: Path, kind: str) -> None:
    """QAPP_RATELIMIT_ENABLED=off: no limit refuses, the default one neither, and no headers."""
    app = _app(tmp_path, RATELIMIT_ENABLED="off", RATELIMIT_DEFAULT="1/minute")
    async for get in _client(app, kind):
        answers = [await get("/strict") for _ in range(3)] + [await get("/open") for _ in range(3)]
        assert [a.status for a in answers] == [200] * 6
        assert all("RateLimit" not in a.headers for a in answers)


@pytest.mark.parametrize(
    ("key", "value"),
    [("RATELIMIT_DEFAULT", "lots"), ("RATELIMIT_ON_STORE_ERROR", "maybe")],
)
def test_bad_limit_settings_fail_at_startup(tmp_path: Path, key: str, value: str) -> None:
    """A default limit or a store-error policy that is not one fails when Qapp is installed."""
    with pytest.raises(ConfigurationError, match=f"QAPP_{key}"):
        _app(tmp_path, **{key: value})


# A store that is down.


@pytest.fixture
def dead_redis() -> Iterator[str]:
    """The URL of a redis-server that was started and then killed."""
    with RedisServer() as server:
        url = server.url
        server.kill()
        yield url


async def test_store_down_allow_lets_in_and_warns_once(
    dead_redis: str, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Store down: ``on_store_error="allow"`` lets requests in and warns once; the rest 503."""
    caplog.set_level(logging.WARNING, logger="qapp.ext.ratelimit")
    async for get in _client(_app(tmp_path, STORE_URL=dead_redis), kind):
        assert await _statuses(get, "/lenient", 3) == [200] * 3
        strict = await get("/strict")
        assert strict.status == 503
        assert strict.body["error"] == "store_unavailable"
        assert int(strict.headers["Retry-After"]) >= 1
    warnings = [r for r in caplog.records if r.name == "qapp.ext.ratelimit"]
    assert len(warnings) == 1
    assert "store is unavailable" in warnings[0].getMessage()


async def test_store_down_allowed_by_the_setting(
    dead_redis: str, tmp_path: Path, kind: str
) -> None:
    """QAPP_RATELIMIT_ON_STORE_ERROR=allow lets every limited request in while the store is down."""
    app = _app(tmp_path, STORE_URL=dead_redis, RATELIMIT_ON_STORE_ERROR="allow")
    async for get in _client(app, kind):
        assert await _statuses(get, "/strict", 3) == [200] * 3


# The boundary burst on real workers.


@pytest.fixture(params=["sqlite", "redis", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HypercornServer]:
    """The app under ``qapp serve`` with 4 workers, on SQLite, Redis or PostgreSQL."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    env = {"QAPP_INSTANCE_PATH": str(tmp_path), "QAPP_STORE_URL": url}
    with HypercornServer(
        workers=4, env=env, app="tests.ratelimit_app_asgi:app", cwd=ROOT
    ) as running:
        yield running


@pytest.mark.slow
async def test_boundary_burst_on_four_workers(served: HypercornServer) -> None:
    """4 workers, 10 requests before a boundary and 10 after: 10 allowed in all (fixed: 20)."""
    # Many connections, so that the requests spread over the workers.
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=served.url, limits=limits, timeout=10) as client:

        def burst(path: str) -> Callable[[], Awaitable[int]]:
            async def fire() -> int:
                answers = await asyncio.gather(*(client.get(path) for _ in range(10)))
                assert {a.status_code for a in answers} <= {200, 429}
                return sum(a.status_code == 200 for a in answers)

            return fire

        sliding = await _straddle(burst("/burst"), 10.0, lead=1.5)
        fixed = await _straddle(burst("/burst-fixed"), 10.0, lead=1.5)
    assert sliding == (10, 0)
    assert fixed == (10, 10)
