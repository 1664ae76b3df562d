"""The ceiling of a server: a bare ASGI function, no framework at all.

It answers the routes the peers share, exactly as they do (``GET /health``
pings Redis, ``POST /counter/atomic`` is one INCRBY, the reads of a cached
value, a session and the logged-in user make qapp's Redis calls, through
:mod:`bench.peers.reads`), with nothing between the server and
redis.asyncio: no routing table, no request object, no hooks. It runs on
granian with the fast path's settings, and on hypercorn with qapp serve's
defaults: what qapp reaches of it on each is what its framework and its own
hooks leave of that server's speed.

Configured by ``PEER_REDIS_URL``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis

from bench.peers import reads

COUNTER_KEY = "asgi-ceiling:counter"
PID = os.getpid()

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

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
JSON = [(b"content-type", b"application/json")]


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [*JSON, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _session_id(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"cookie":
            return reads.session_id(value.decode("latin-1"))
    return None


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The whole app: five routes, their Redis calls, and a 404."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    route = (scope["method"], scope["path"])
    try:
        if route == ("POST", "/counter/atomic"):
            value = int(await client.incrby(COUNTER_KEY, 1))
            await _answer(send, 200, {"strategy": "atomic", "value": value, "worker": PID})
        elif route == ("GET", "/health"):
            await client.ping()
            await _answer(send, 200, {"status": "ok", "worker": PID, "store": "redis"})
        elif route[0] == "GET" and route[1].startswith("/cache/"):
            await _answer(send, *await reads.cache_get(client, route[1][len("/cache/") :]))
        elif route == ("GET", "/session/counter"):
            await _answer(send, *await reads.session_counter(client, _session_id(scope)))
        elif route == ("GET", "/auth/me"):
            await _answer(send, *await reads.me(client, _session_id(scope)))
        else:
            await _answer(send, 404, {"error": "not_found", "message": "no such route"})
    except redis.RedisError as exc:
        await _answer(send, 503, {"error": "store_unavailable", "message": str(exc)})
