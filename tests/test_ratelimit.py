"""The rate limiter: exact across processes on shared stores, honest about memory://.

The store-level rule (:mod:`qapp.store.ratelimit`) is proven on every backend;
the route decorator (:mod:`qapp.ext.ratelimit`) on a small app of its own,
as a user would write it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import pytest
from quart import Quart

from qapp.ext import Qapp, rate_limit
from qapp.ext.ratelimit import trusted_proxies
from qapp.state import ConfigurationError, Store, open_store
from qapp.store.ratelimit import Limit, hit, parse_limit

PROCESSES = 4


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("5/minute", Limit(5, 60)),
        ("5 per minute", Limit(5, 60)),
        ("100/hour", Limit(100, 3600)),
        ("10/30 seconds", Limit(10, 30)),
        ("1/day", Limit(1, 86400)),
    ],
)
def test_limits_parse(text: str, limit: Limit) -> None:
    """Limit strings name a count and a period."""
    assert parse_limit(text) == limit


@pytest.mark.parametrize("text", ["", "5", "five/minute", "0/minute", "5/fortnight", "-1/hour"])
def test_bad_limits_are_configuration_errors(text: str) -> None:
    """A limit that cannot be read fails as a configuration error."""
    with pytest.raises(ConfigurationError):
        parse_limit(text)


async def _clear_of_a_boundary(limit: Limit, room: float = 2.0) -> None:
    """Wait, if need be, until ``room`` seconds of the current window remain ahead."""
    left = limit.period - time.time() % limit.period
    if left < room:
        await asyncio.sleep(left + 0.05)


async def test_n_allowed_then_refused_with_a_reset(store: Store) -> None:
    """A limit of N lets N events through, refuses the next, and says when to retry."""
    limit = Limit(5, 60)
    await _clear_of_a_boundary(limit)
    verdicts = [await hit(store, "client", limit) for _ in range(7)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False] * 2
    assert [v.remaining for v in verdicts] == [4, 3, 2, 1, 0, 0, 0]
    assert all(0 < v.reset <= 60 and 1 <= v.retry_after <= 60 for v in verdicts)


async def test_keys_and_windows_are_apart(store: Store) -> None:
    """Two keys have their own budgets, and a new window starts a new count."""
    # Windows long enough that the three hits share one on a busy machine,
    # started clear of a boundary: a boundary between them would rightly
    # give "a" a fresh budget.
    limit = Limit(1, 1.5)
    await _clear_of_a_boundary(limit, room=1.0)
    assert (await hit(store, "a", limit)).allowed
    assert (await hit(store, "b", limit)).allowed
    assert not (await hit(store, "a", limit)).allowed
    # Into the next window.
    await asyncio.sleep(limit.period - time.time() % limit.period + 0.05)
    assert (await hit(store, "a", limit)).allowed


async def test_concurrent_hits_allow_exactly_n(store: Store) -> None:
    """200 concurrent events against a limit of 50 in one process: exactly 50 allowed."""
    limit = Limit(50, 60)
    await _clear_of_a_boundary(limit)
    verdicts = await asyncio.gather(*(hit(store, "burst", limit) for _ in range(200)))
    assert sum(v.allowed for v in verdicts) == 50


#: The cross-process tests' window: long, so that their burst fits in one.
WINDOW = 3600.0


def _start_in_one_window(lead: float = 1.5, room: float = 60.0) -> float:
    """A moment ``lead`` seconds or more away, with ``room`` seconds of its window after it.

    A fixed window lets N through on each side of its boundary, so a burst that
    straddled one would be allowed 2 × N, rightly: the test must not straddle.
    """
    start = time.time() + lead
    left = WINDOW - start % WINDOW
    return start + left + 0.1 if left < room else start


def _hits(url: str, count: int, start_at: float) -> int:
    async def run() -> int:
        async with await open_store(url) as store:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            limit = Limit(100, WINDOW)
            verdicts = await asyncio.gather(*(hit(store, "shared", limit) for _ in range(count)))
            return sum(v.allowed for v in verdicts)

    return asyncio.run(run())


async def _across_processes(url: str) -> int:
    loop = asyncio.get_running_loop()
    start_at = _start_in_one_window()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=ctx) as pool:
        counts = await asyncio.gather(
            *(loop.run_in_executor(pool, _hits, url, 100, start_at) for _ in range(PROCESSES))
        )
    return sum(counts)


@pytest.mark.slow
async def test_exact_across_four_processes_on_shared_stores(shared_store_url: str) -> None:
    """4 processes × 100 events against a limit of 100: exactly 100 allowed, never 101."""
    assert await _across_processes(shared_store_url) == 100


@pytest.mark.slow
async def test_memory_counts_per_process() -> None:
    """On memory:// each process counts alone: 4 processes let 4 × the limit through.

    That is the documented price of a process-local store, not a bug: use
    SQLite or Redis for a limit that holds across workers.
    """
    assert await _across_processes("memory://") == 4 * 100


def test_trusted_proxies_parse() -> None:
    """QAPP_TRUSTED_PROXIES takes addresses and networks, as a list or comma-separated."""
    assert len(trusted_proxies("127.0.0.1, 10.0.0.0/8")) == 2
    assert trusted_proxies(None) == ()
    with pytest.raises(ConfigurationError):
        trusted_proxies("not-an-address")


def _app(tmp_path: Path, proxies: str | None = None) -> Quart:
    app = Quart(__name__)
    app.config["QAPP_STORE_URL"] = f"sqlite://{tmp_path / 'limits.db'}"
    if proxies:
        app.config["QAPP_TRUSTED_PROXIES"] = proxies
    qapp = Qapp(app)

    @app.post("/login")
    @qapp.rate_limit("3/minute")
    async def login() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/other")
    @rate_limit("3/minute", key=lambda: "everyone", scope="shared-budget")
    async def other() -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = _app(tmp_path, proxies="127.0.0.1")
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_route_answers_429_with_headers(limited: httpx.AsyncClient) -> None:
    """Over a route's limit: a JSON 429 with Retry-After and the RateLimit headers."""
    answers = [await limited.post("/login") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["RateLimit-Limit"] == "3"
    assert answers[0].headers["RateLimit-Remaining"] == "2"
    assert answers[0].headers["RateLimit-Policy"] == '"3/60s";q=3;w=60'
    refused = answers[3]
    assert refused.json()["error"] == "too_many_requests"
    # A sliding window frees room as the previous window's weight fades: up to two periods.
    assert 1 <= int(refused.headers["Retry-After"]) <= 120
    assert refused.headers["RateLimit-Remaining"] == "0"


async def test_clients_behind_a_trusted_proxy_have_their_own_budgets(
    limited: httpx.AsyncClient,
) -> None:
    """Behind a trusted proxy each forwarded client counts alone; a forged hop does not help."""
    for n in range(3):
        ok = await limited.post("/login", headers={"X-Forwarded-For": "198.51.100.7"})
        assert ok.status_code == 200, n
    assert (
        await limited.post("/login", headers={"X-Forwarded-For": "198.51.100.7"})
    ).status_code == 429
    # A client cannot escape by writing another address left of the proxy's.
    forged = await limited.post("/login", headers={"X-Forwarded-For": "1.2.3.4, 198.51.100.7"})
    assert forged.status_code == 429
    other = await limited.post("/login", headers={"X-Forwarded-For": "198.51.100.8"})
    assert other.status_code == 200


async def test_untrusted_forwarded_header_is_ignored(tmp_path: Path) -> None:
    """Without a trusted proxy, X-Forwarded-For changes nothing: the peer is the client."""
    app = _app(tmp_path)
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            statuses = [
                (
                    await client.post("/login", headers={"X-Forwarded-For": f"198.51.100.{n}"})
                ).status_code
                for n in range(4)
            ]
    assert statuses == [200, 200, 200, 429]


async def test_a_scope_shares_one_budget(limited: httpx.AsyncClient) -> None:
    """Routes limited with one scope and one key spend one budget."""
    statuses = [(await limited.post("/other")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
