"""The shared cache: put, get and delete JSON values with optional fractional ttls."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart

from tests.storedump import (
    assert_json_error,
    assert_refused_unchanged,
    client_with_dead_store,
    snapshot,
)

JSON = {"content-type": "application/json"}
#: Valid JSON, but nested deeper than Python's parser can recurse.
DEEP = "[" * 20_000 + "]" * 20_000


@pytest.mark.parametrize(
    "value",
    [
        None,
        0,
        -1.5,
        True,
        "text",
        "\u00e9\u2603\U0001f600",
        [],
        {},
        [1, [2, [3]]],
        {"a": {"b": None}},
    ],
)
async def test_any_json_value_round_trips(client: httpx.AsyncClient, value: Any) -> None:
    """Any JSON value, null included, is stored and answered as it was put."""
    # Not json=value: httpx sends no body at all for json=None.
    response = await client.put("/cache/k", content=json.dumps(value), headers=JSON)
    assert response.status_code == 204
    assert response.content == b""
    response = await client.get("/cache/k")
    assert response.status_code == 200
    assert response.json() == {"key": "k", "value": value}


async def test_put_overwrites(client: httpx.AsyncClient) -> None:
    """A second PUT replaces the value."""
    await client.put("/cache/k", json=1)
    await client.put("/cache/k", json=2)
    assert (await client.get("/cache/k")).json()["value"] == 2


async def test_every_key_character_is_accepted(client: httpx.AsyncClient) -> None:
    """Keys may use letters, digits, '.', '_', ':' and '-', up to 200 characters."""
    for key in ["a", "A.b_c:d-e", "0" * 200, "user:42.profile"]:
        assert (await client.put(f"/cache/{key}", json=key)).status_code == 204
        assert (await client.get(f"/cache/{key}")).json() == {"key": key, "value": key}


async def test_missing_key_is_404(client: httpx.AsyncClient) -> None:
    """GET and DELETE of a key never set answer a JSON 404."""
    assert_json_error(await client.get("/cache/nope"), 404, "not_found")
    assert_json_error(await client.delete("/cache/nope"), 404, "not_found")


async def test_delete_then_404(client: httpx.AsyncClient) -> None:
    """DELETE answers 204 once, then the key is gone."""
    await client.put("/cache/k", json={"x": 1})
    response = await client.delete("/cache/k")
    assert response.status_code == 204
    assert_json_error(await client.get("/cache/k"), 404)
    assert_json_error(await client.delete("/cache/k"), 404)


async def test_fractional_ttl_expires(client: httpx.AsyncClient) -> None:
    """A value put with ttl=0.3 is there at once and gone after the ttl."""
    assert (await client.put("/cache/k?ttl=0.3", json="soon gone")).status_code == 204
    assert (await client.get("/cache/k")).status_code == 200
    await asyncio.sleep(0.6)
    assert_json_error(await client.get("/cache/k"), 404)


async def test_put_without_ttl_removes_old_ttl(client: httpx.AsyncClient) -> None:
    """A PUT without ttl keeps the new value until deleted, whatever the old one's ttl."""
    await client.put("/cache/k?ttl=0.3", json=1)
    await client.put("/cache/k", json=2)
    await asyncio.sleep(0.5)
    assert (await client.get("/cache/k")).json()["value"] == 2


async def test_cache_is_in_the_cache_store(client: httpx.AsyncClient, app: Quart) -> None:
    """The value lives in the cache store under cache:<key>, as JSON."""
    await client.put("/cache/k", json=[1, 2])
    stores = await snapshot(app)
    cache_url = app.extensions["qapp"].settings.urls["cache"]
    assert stores[cache_url]["cache:k"] == '{"value":[1,2]}'


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str | None]] = [
    # bad keys
    ("PUT", "/cache/" + "a" * 201, {"json": 1}, 400, "invalid_key"),
    ("GET", "/cache/" + "a" * 201, {}, 400, "invalid_key"),
    ("DELETE", "/cache/" + "a" * 201, {}, 400, "invalid_key"),
    ("PUT", "/cache/a%20b", {"json": 1}, 400, "invalid_key"),
    ("PUT", "/cache/a/b", {"json": 1}, 400, "invalid_key"),
    ("PUT", "/cache/%C3%A9", {"json": 1}, 400, "invalid_key"),
    ("GET", "/cache/a$b", {}, 400, "invalid_key"),
    ("DELETE", "/cache/a*", {}, 400, "invalid_key"),
    ("PUT", "/cache/", {"json": 1}, 404, "not_found"),
    # Not merged into "/cache/k" (werkzeug's 308 redirect to another key).
    ("PUT", "/cache//k", {"json": 1}, 404, "not_found"),
    ("PUT", "/cache/a//k", {"json": 1}, 400, "invalid_key"),
    # bad ttls
    ("PUT", "/cache/k?ttl=0", {"json": 1}, 400, "invalid_query"),
    ("PUT", "/cache/k?ttl=-1", {"json": 1}, 400, "invalid_query"),
    ("PUT", "/cache/k?ttl=abc", {"json": 1}, 400, "invalid_query"),
    ("PUT", "/cache/k?ttl=", {"json": 1}, 400, "invalid_query"),
    ("PUT", "/cache/k?ttl=nan", {"json": 1}, 400, "invalid_query"),
    ("PUT", "/cache/k?ttl=inf", {"json": 1}, 400, "invalid_query"),
    ("PUT", "/cache/k?ttl=1e400", {"json": 1}, 400, "invalid_query"),
    ("PUT", "/cache/k?ttl=1e12", {"json": 1}, 400, "invalid_query"),
    ("PUT", "/cache/k?ttl=1&ttl=2", {"json": 1}, 400, "invalid_query"),
    ("PUT", "/cache/k?ttl=true", {"json": 1}, 400, "invalid_query"),
    # bad bodies
    ("PUT", "/cache/k", {}, 400, "missing_body"),
    ("PUT", "/cache/k", {"content": "{", "headers": JSON}, 400, "invalid_json"),
    ("PUT", "/cache/k", {"content": "[1,]", "headers": JSON}, 400, "invalid_json"),
    ("PUT", "/cache/k", {"content": "NaN", "headers": JSON}, 400, "invalid_json"),
    ("PUT", "/cache/k", {"content": "[Infinity]", "headers": JSON}, 400, "invalid_json"),
    ("PUT", "/cache/k", {"content": "1e400", "headers": JSON}, 400, "invalid_json"),
    ("PUT", "/cache/k", {"content": DEEP, "headers": JSON}, 400, "invalid_json"),
    # Deep enough to parse, then (before the depth limit) a 500 when stored.
    ("PUT", "/cache/k", {"content": "[" * 979 + "]" * 979, "headers": JSON}, 400, "invalid_json"),
    ("PUT", "/cache/k", {"content": "[" * 101 + "]" * 101, "headers": JSON}, 400, "invalid_json"),
    # A lone surrogate: was a 503 on SQLite and a 500 on Redis.
    ("PUT", "/cache/k", {"content": '["\\ud800"]', "headers": JSON}, 400, "invalid_json"),
    ("PUT", "/cache/k", {"content": b"\"\xff\"", "headers": JSON}, 400, "invalid_json"),
    ("PUT", "/cache/k", {"content": "1 2", "headers": JSON}, 400, "invalid_json"),
    ("PUT", "/cache/k", {"content": "1", "headers": {"content-type": "text/plain"}}, 415, None),
    ("PUT", "/cache/k", {"content": "1"}, 415, None),
    ("PUT", "/cache/k", {"data": {"v": "1"}}, 415, None),
    ("PUT", "/cache/k", {"files": {"f": b"1"}}, 415, None),
    ("PUT", "/cache/k", {"json": "x" * 70_000}, 413, None),
    ("DELETE", "/cache/k", {"content": "1", "headers": {"content-type": "text/plain"}}, 415, None),
    # wrong methods
    ("POST", "/cache/k", {"json": 1}, 405, "method_not_allowed"),
    ("PATCH", "/cache/k", {"json": 1}, 405, "method_not_allowed"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), BAD_REQUESTS)
async def test_bad_requests_change_nothing(
    client: httpx.AsyncClient,
    app: Quart,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str | None,
) -> None:
    """Bad keys, ttls, bodies and methods get the API's JSON 4xx, and the store is unchanged."""
    await client.put("/cache/k", json="original")
    await assert_refused_unchanged(app, client, method, path, status, code, **kwargs)
    assert (await client.get("/cache/k")).json() == {"key": "k", "value": "original"}


async def test_largest_body_is_accepted(client: httpx.AsyncClient) -> None:
    """A body of exactly 64 KiB is stored; the limit is on the byte count."""
    body = '"' + "x" * (64 * 1024 - 2) + '"'
    response = await client.put("/cache/big", content=body, headers=JSON)
    assert response.status_code == 204
    assert len((await client.get("/cache/big")).json()["value"]) == 64 * 1024 - 2


async def test_chunked_oversized_body_is_413(client: httpx.AsyncClient, app: Quart) -> None:
    """A body sent in chunks, with no length announced, is cut off at 64 KiB with a 413."""

    async def chunks() -> Any:
        yield b'"'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"'

    before = await snapshot(app)
    response = await client.put("/cache/k", content=chunks(), headers=JSON)
    assert_json_error(response, 413)
    assert await snapshot(app) == before


async def test_store_down_is_json_503(tmp_path: Path) -> None:
    """With the cache store down every cache route answers a JSON 503 with Retry-After."""
    async with client_with_dead_store(tmp_path, CACHE_STORE_URL="dead") as (_, c):
        for response in [
            await c.put("/cache/k", json=1),
            await c.get("/cache/k"),
            await c.delete("/cache/k"),
        ]:
            assert_json_error(response, 503, "store_unavailable")
            assert response.headers["retry-after"] == "1"
