"""The service's own routes and its JSON error shape, on every backend."""

from __future__ import annotations

import os

import httpx


async def test_health(client: httpx.AsyncClient, store_url: str) -> None:
    """/health names the worker and the store it reached."""
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["worker"] == os.getpid()
    assert body["store"] == store_url.split(":")[0]


async def test_health_warns_on_memory_store(client: httpx.AsyncClient, store_url: str) -> None:
    """Only the process-local memory store carries a warning that it is not shared."""
    body = (await client.get("/health")).json()
    assert ("warning" in body) == store_url.startswith("memory")


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    """An unknown path gets a JSON 404 in the project's error shape."""
    response = await client.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "not_found"
    assert response.json()["message"]


async def test_wrong_method_is_json_405(client: httpx.AsyncClient) -> None:
    """A wrong method gets a JSON 405 that lists the allowed ones."""
    response = await client.delete("/health")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]
