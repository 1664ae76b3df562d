"""The async peer: FastAPI with redis.asyncio, serving the Flask peer's two routes.

What an adopter who left Flask for asyncio would write first: FastAPI on
uvicorn (uvloop and httptools, ``uvicorn[standard]``), one
``redis.asyncio.Redis`` per worker process, made when uvicorn's worker
imports this module (its connections are opened lazily, inside that
worker's event loop). ``GET /health`` pings Redis, ``POST /counter/atomic``
is one INCRBY, each answering the same JSON as qapp's routes.

Configured by ``PEER_REDIS_URL``.
"""

from __future__ import annotations

import os
from typing import Any

import redis.asyncio as redis
from fastapi import FastAPI
from fastapi.responses import JSONResponse

COUNTER_KEY = "fastapi-peer:counter"

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
# A bounded pool, as qapp's Redis store has (64 connections, 5 s to get one):
# an unbounded one opens a connection per request in flight, and at 1,000
# connections Redis refuses some of them.
client = redis.Redis.from_pool(
    redis.BlockingConnectionPool.from_url(
        os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0"),
        max_connections=64,
        timeout=5,
        socket_timeout=5,
        socket_connect_timeout=2,
    )
)


@app.get("/health", response_model=None)
async def health() -> dict[str, Any] | JSONResponse:
    """200 if Redis answers, else a JSON 503, as qapp's ``/health``."""
    try:
        await client.ping()
    except redis.RedisError as exc:
        body = {"status": "unavailable", "error": "store_unavailable", "message": str(exc)}
        return JSONResponse(body, status_code=503)
    return {"status": "ok", "worker": os.getpid(), "store": "redis"}


@app.post("/counter/atomic", response_model=None)
async def counter_atomic() -> dict[str, Any] | JSONResponse:
    """Increment the shared counter with one INCRBY and return this request's number."""
    try:
        value = int(await client.incrby(COUNTER_KEY, 1))
    except redis.RedisError as exc:
        body = {"error": "store_unavailable", "message": str(exc)}
        return JSONResponse(body, status_code=503)
    return {"strategy": "atomic", "value": value, "worker": os.getpid()}
