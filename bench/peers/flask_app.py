"""The peer: the seed questions' synchronous Flask app, with qapp's atomic counter.

It serves the same contract as qapp for the two routes it shares:
``GET /health`` pings the store, and ``POST /counter/atomic`` is one Redis
INCRBY. It uses redis-py's synchronous client with one blocking pool per
process, made when gunicorn's worker imports this module (gunicorn runs
without ``--preload``, so each worker makes its own; a pool inherited across
``fork`` would share sockets between processes). The pool holds one
connection per gunicorn thread, so a thread never waits for another's.

Configured by ``PEER_REDIS_URL`` and ``PEER_THREADS``.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from flask import Flask

COUNTER_KEY = "peer:counter"

app = Flask(__name__)
pool = redis.BlockingConnectionPool.from_url(
    os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0"),
    max_connections=int(os.environ.get("PEER_THREADS", "8")),
    timeout=5,
    socket_timeout=5,
)
client = redis.Redis(connection_pool=pool)


@app.get("/health")
def health() -> tuple[dict[str, Any], int]:
    """200 if Redis answers, else a JSON 503, as qapp's ``/health``."""
    try:
        client.ping()
    except redis.RedisError as exc:
        return {"status": "unavailable", "error": "store_unavailable", "message": str(exc)}, 503
    return {"status": "ok", "worker": os.getpid(), "store": "redis"}, 200


@app.post("/counter/atomic")
def counter_atomic() -> tuple[dict[str, Any], int]:
    """Increment the shared counter with one INCRBY and return this request's number."""
    try:
        value = int(client.incrby(COUNTER_KEY, 1))
    except redis.RedisError as exc:
        return {"error": "store_unavailable", "message": str(exc)}, 503
    return {"strategy": "atomic", "value": value, "worker": os.getpid()}, 200
