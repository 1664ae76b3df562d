"""The async peer: FastAPI with redis.asyncio, serving the bench's one-store-call routes.

What an adopter who left Flask for asyncio would write first: FastAPI on
uvicorn (uvloop and httptools, ``uvicorn[standard]``), one
``redis.asyncio.Redis`` per worker process, made when uvicorn's worker
imports this module (its connections are opened lazily, inside that
worker's event loop). ``GET /health`` pings Redis, ``POST /counter/atomic``
is one INCRBY, and the reads of a cached value, a session and the logged-in
user make the same Redis calls as qapp's (:mod:`bench.peers.reads`), each
answering the same JSON as qapp's routes. The session id is FastAPI's
``Cookie`` parameter.

Configured by ``PEER_REDIS_URL``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable
from typing import Annotated, Any

import redis.asyncio as redis
from fastapi import Cookie, FastAPI
from fastapi.responses import JSONResponse

from bench.peers import reads

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


@app.get("/cache/{key}", response_model=None)
async def cache_get(key: str) -> dict[str, Any] | JSONResponse:
    """One GET of the cached value, as qapp's ``GET /cache/<key>``."""
    return _json(await _read(reads.cache_get(client, key)))


@app.get("/session/counter", response_model=None)
async def session_counter(
    session: Annotated[str | None, Cookie()] = None,
) -> dict[str, Any] | JSONResponse:
    """This client's session counter: the session, then its counter, as qapp reads them."""
    return _json(await _read(reads.session_counter(client, session)))


@app.get("/auth/me", response_model=None)
async def me(session: Annotated[str | None, Cookie()] = None) -> dict[str, Any] | JSONResponse:
    """The logged-in user: the session, the user's login generation, the user's record."""
    return _json(await _read(reads.me(client, session)))


async def _read(call: Awaitable[reads.Answer]) -> reads.Answer:
    try:
        return await call
    except redis.RedisError as exc:
        return 503, {"error": "store_unavailable", "message": str(exc)}


def _json(answer: reads.Answer) -> dict[str, Any] | JSONResponse:
    # A plain dict for 200, as the other routes answer; the status otherwise.
    status, body = answer
    return body if status == 200 else JSONResponse(body, status_code=status)
