"""Test helpers: read everything an app has stored, straight from each backend.

Tests of bad input compare a snapshot taken before and after the request:
"nothing stored changes" is then checked on the data itself, not on what
the API chooses to answer. The readers go around the Store API on purpose
(it has no "list every key"), using each backend's own storage.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
from quart import Quart

from qapp import create_app
from qapp.ext import state_of
from qapp.state import Store
from qapp.store.backends.memory import MemoryStore
from qapp.store.backends.postgres import PostgresStore
from qapp.store.backends.redis import DATA_PREFIX, RedisStore
from qapp.store.backends.sqlite import SQLiteStore
from qapp.testing import free_port


async def dump(store: Store) -> dict[str, str]:
    """Every live key of ``store`` and its JSON text."""
    if isinstance(store, MemoryStore):
        now = time.monotonic()
        return {
            key: raw
            for bucket in store.buckets.values()
            for key, (raw, expires) in bucket.items()
            if expires is None or expires > now
        }
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            rows = conn.execute(
                "SELECT key, value FROM qapp_kv WHERE expires_at IS NULL OR expires_at > ?",
                (time.time(),),
            ).fetchall()
        conn.close()
        return dict(rows)
    if isinstance(store, RedisStore):
        client = aioredis.Redis.from_url(store.url, decode_responses=True)
        try:
            keys = [str(k) for k in await client.keys(DATA_PREFIX + "*")]
            values = await client.mget(keys) if keys else []
            return {
                k.removeprefix(DATA_PREFIX): str(v)
                for k, v in zip(keys, values, strict=True)
                if v is not None
            }
        finally:
            await client.aclose()
    if isinstance(store, PostgresStore):
        pg = await asyncpg.connect(store.url)
        try:
            if await pg.fetchval("SELECT to_regclass('qapp_kv')") is None:
                return {}
            rows = await pg.fetch(
                "SELECT key, value::text FROM qapp_kv"
                " WHERE expires_at IS NULL OR expires_at > statement_timestamp()"
            )
        finally:
            await pg.close()
        return {bytes(key).decode(): raw for key, raw in rows}
    raise TypeError(f"cannot dump {type(store).__name__}")


#: Rate-limit and quota counters: the one thing a refused request may change
#: (a refused login must count, or the throttle could be guessed around).
COUNTERS = "ratelimit:"


async def snapshot(app: Quart) -> dict[str, dict[str, str]]:
    """The contents of every distinct store of ``app``, by URL, rate-limit counters left out."""
    stores = {store.url: store for store in state_of(app).distinct_stores()}
    return {
        url: {k: v for k, v in (await dump(store)).items() if not k.startswith(COUNTERS)}
        for url, store in stores.items()
    }


async def assert_refused_unchanged(
    app: Quart,
    client: httpx.AsyncClient,
    method: str,
    path: str,
    status: int,
    code: str | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request: it must get the API's JSON error, and no store may change."""
    before = await snapshot(app)
    response = await client.request(method, path, **kwargs)
    assert_json_error(response, status, code)
    assert await snapshot(app) == before
    return response


def cookie_of(response: httpx.Response, name: str = "session") -> str | None:
    """The value a response sets for cookie ``name``, if it sets one."""
    for header in response.headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key == name:
            return rest.split(";", 1)[0]
    return None


def assert_json_error(response: httpx.Response, status: int, code: str | None = None) -> Any:
    """``response`` is a JSON error of ``status`` (and ``code``) in the project's shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "message"}
    assert body["message"]
    if code is not None:
        assert body["error"] == code
    return body


@contextlib.asynccontextmanager
async def client_with_dead_store(
    instance: Path, **roles: str
) -> AsyncIterator[tuple[Quart, httpx.AsyncClient]]:
    """An app whose stores (or the roles named, e.g. ``SESSION_STORE_URL="dead"``) are down.

    "Down" is a Redis URL on a free port where nothing listens, so every
    store call fails at once, as against a crashed server.
    """
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = dict.fromkeys(roles, dead) or {"STORE_URL": dead}
    app = create_app({"STORE_URL": "memory://", "INSTANCE_PATH": str(instance), **settings})
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            yield app, c
