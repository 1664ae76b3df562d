"""The race lab in one process, through the ASGI app, on every backend."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import httpx
import pytest

from qapp import create_app
from qapp.service.counters import STRATEGIES
from qapp.testing import free_port

#: Concurrent requests per demonstration, as in the lesson the project first measured.
N = 200


async def burst(client: httpx.AsyncClient, strategy: str, n: int = N) -> list[int]:
    """POST ``n`` increments at once and return the numbers handed out."""
    responses = await asyncio.gather(*(client.post(f"/counter/{strategy}") for _ in range(n)))
    assert [r.status_code for r in responses] == [200] * n
    return [r.json()["value"] for r in responses]


@pytest.mark.parametrize("strategy", ["unsafe", "shared-unsafe"])
async def test_unsafe_strategies_lose_updates(client: httpx.AsyncClient, strategy: str) -> None:
    """Read, await, write loses increments and repeats numbers even in one worker."""
    # asyncio.gather starts all N requests before any of them runs, so they
    # reach the handler in lockstep: the requests scheduled together all read
    # before any of them writes. The race is certain, not likely.
    values = await burst(client, strategy)
    final = (await client.get(f"/counter/{strategy}")).json()["value"]
    assert final < N, "every increment survived: the race did not show"
    assert len(set(values)) < N
    assert max(Counter(values).values()) > 1


@pytest.mark.parametrize("strategy", ["locked", "shared-locked", "atomic"])
async def test_safe_strategies_count_exactly(client: httpx.AsyncClient, strategy: str) -> None:
    """A lock or an atomic increment hands 200 concurrent requests exactly 1..200."""
    values = await burst(client, strategy)
    assert sorted(values) == list(range(1, N + 1))
    final = (await client.get(f"/counter/{strategy}")).json()
    assert final == {"strategy": strategy, "value": N, "worker": os.getpid()}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
async def test_answers_name_strategy_value_and_worker(
    client: httpx.AsyncClient, strategy: str
) -> None:
    """POST answers this request's number, GET the current one, both naming the worker."""
    assert (await client.post(f"/counter/{strategy}")).json() == {
        "strategy": strategy,
        "value": 1,
        "worker": os.getpid(),
    }
    await client.post(f"/counter/{strategy}")
    assert (await client.get(f"/counter/{strategy}")).json()["value"] == 2


@pytest.mark.parametrize(
    ("strategy", "scope"),
    [("unsafe", "worker"), ("locked", "worker"), ("shared-unsafe", "shared"),
     ("shared-locked", "shared"), ("atomic", "shared")],
)  # fmt: skip
async def test_delete_resets_and_names_scope(
    client: httpx.AsyncClient, strategy: str, scope: str
) -> None:
    """DELETE resets the counter to 0 and says whether it was the worker's or the shared one."""
    for _ in range(3):
        await client.post(f"/counter/{strategy}")
    response = await client.delete(f"/counter/{strategy}")
    assert response.status_code == 200
    assert response.json() == {
        "strategy": strategy,
        "value": 0,
        "worker": os.getpid(),
        "scope": scope,
    }
    assert (await client.get(f"/counter/{strategy}")).json()["value"] == 0
    assert (await client.post(f"/counter/{strategy}")).json()["value"] == 1


async def test_strategies_keep_separate_counters(client: httpx.AsyncClient) -> None:
    """Each strategy counts on its own: incrementing one leaves the others at 0."""
    await client.post("/counter/atomic")
    await client.post("/counter/atomic")
    for name in STRATEGIES:
        expected = 2 if name == "atomic" else 0
        assert (await client.get(f"/counter/{name}")).json()["value"] == expected


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
async def test_unknown_strategy_is_json_404_listing_valid_ones(
    client: httpx.AsyncClient, method: str
) -> None:
    """An unknown strategy is a JSON 404 whose message lists every valid strategy."""
    response = await client.request(method, "/counter/optimistic")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "unknown_strategy"
    assert "'optimistic'" in body["message"]
    for name in STRATEGIES:
        assert name in body["message"]


@pytest.mark.parametrize("path", ["/counter/atomic", "/counter/nope"])
async def test_wrong_method_is_json_405(client: httpx.AsyncClient, path: str) -> None:
    """PUT or PATCH on a counter is a JSON 405 that lists the allowed methods."""
    for method in ("PUT", "PATCH"):
        response = await client.request(method, path, json={"value": 7})
        assert response.status_code == 405
        assert response.json()["error"] == "method_not_allowed"
        assert {"GET", "POST", "DELETE"} <= set(response.headers["allow"].split(", "))
    # Nothing was written by the refused requests.
    assert (await client.get("/counter/atomic")).json()["value"] == 0


@pytest.mark.parametrize(
    "path",
    ["/counter/", "/counter", "/counter/atomic/extra", "/counter/%00", "/counter/" + "x" * 5000],
)
async def test_odd_counter_paths_are_json_4xx(client: httpx.AsyncClient, path: str) -> None:
    """Malformed counter paths get a JSON 4xx, never a 500."""
    response = await client.post(path)
    assert 400 <= response.status_code < 500
    assert set(response.json()) == {"error", "message"}


async def test_oversized_body_is_413_and_counts_nothing(client: httpx.AsyncClient) -> None:
    """A POST body over 64 KiB is a JSON 413 and does not increment the counter."""
    response = await client.post(
        "/counter/atomic",
        content=b"1" * (64 * 1024 + 1),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert set(response.json()) == {"error", "message"}
    assert (await client.get("/counter/atomic")).json()["value"] == 0


async def test_non_json_body_is_415_and_counts_nothing(client: httpx.AsyncClient) -> None:
    """A POST body that is not JSON is a JSON 415 and does not increment the counter."""
    response = await client.post(
        "/counter/locked",
        content=b"n=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert (await client.get("/counter/locked")).json()["value"] == 0
    # A JSON body is accepted (and ignored): an increment takes no input.
    assert (await client.post("/counter/locked", json={"by": 5})).json()["value"] == 1


async def test_store_down_is_503_and_worker_counters_still_work(tmp_path: Path) -> None:
    """With the store unreachable the shared strategies answer 503 + Retry-After, never 500."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app({"STORE_URL": url, "INSTANCE_PATH": str(tmp_path / "instance")})
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            for name in ("shared-unsafe", "shared-locked", "atomic"):
                for method in ("POST", "GET", "DELETE"):
                    response = await c.request(method, f"/counter/{name}")
                    assert response.status_code == 503, (method, name)
                    assert response.json()["error"] == "store_unavailable"
                    assert response.headers["retry-after"]
            # Process state needs no store: the worker's own counters still count.
            assert (await c.post("/counter/locked")).json()["value"] == 1
