"""000: a cache dict filled in one request is empty in the next: where should a cache live?

Not in ``g``: Quart wipes it after every request. Not in a module-level dict
either: each worker process has its own copy, so a value put by one worker is
missing on the others (and lost on restart). Put it in a store that every
worker shares: SQLite for one host, Redis for several, with a ttl for expiry.

Run from inside ``examples/`` (the store: a SQLite file in ``instance/``, or
``QAPP_STORE_URL=redis://localhost:6379/0`` to share it between hosts)::

    qapp serve --app shared_cache:app
    curl -X PUT 'localhost:8000/cache/home?ttl=60' --json '"<h1>hi</h1>"'
    curl localhost:8000/cache/home      # the same value from every worker, for 60 s
"""

from __future__ import annotations

import os
from typing import Any

from quart import Quart, request

from qapp import Qapp
from qapp.state import Store

app = Quart(__name__)
qapp = Qapp(app, sessions=False)  # a cache needs no sessions

Answer = tuple[dict[str, Any], int]


def pages() -> Store:
    """The shared cache: the "cache" store, its keys under "pages:"."""
    return qapp.store("cache").namespace("pages")


@app.put("/cache/<key>")
async def put(key: str) -> Answer:
    ttl = request.args.get("ttl", type=float)
    value = await request.get_json(force=True)
    if value is None or (ttl is not None and not ttl > 0):
        return {"error": "bad_request", "message": "send a JSON value; ttl > 0 seconds"}, 400
    await pages().set(key, value, ttl=ttl)
    return {"key": key, "value": value, "worker": os.getpid()}, 200


@app.get("/cache/<key>")
async def get(key: str) -> Answer:
    value = await pages().get(key)
    status = 404 if value is None else 200
    return {"key": key, "value": value, "worker": os.getpid()}, status


# The wrong way: one dict per worker process. A PUT fills the dict of the
# worker that took it; a GET that lands on another worker misses.
NAIVE: dict[str, Any] = {}


@app.put("/naive/<key>")
async def naive_put(key: str) -> Answer:
    NAIVE[key] = await request.get_json(force=True)
    return {"key": key, "value": NAIVE[key], "worker": os.getpid()}, 200


@app.get("/naive/<key>")
async def naive_get(key: str) -> Answer:
    value = NAIVE.get(key)
    return {"key": key, "value": value, "worker": os.getpid()}, 404 if value is None else 200
