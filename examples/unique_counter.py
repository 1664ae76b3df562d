"""001: can a global variable give 100 concurrent clients each a unique number, 1..100?

No. Each worker process has its own copy of a global, and even in one process
an ``await`` between reading and writing it lets another request read the same
value. Count in a store with an atomic ``incr``; a per-client counter is a
per-session value, kept server-side and changed atomically too.

Run from inside ``examples/`` (the store: a SQLite file in ``instance/``)::

    qapp serve --app unique_counter:app
    curl -X POST localhost:8000/number           # {"number": 1, "worker": ...}
    curl -c jar -b jar -X POST localhost:8000/inc  # {"counter": 1}, this client's own
"""

from __future__ import annotations

import asyncio
import os

from quart import Quart

from qapp import Qapp
from qapp.ext import session  # Quart's `session`, typed as qapp's ServerSession

app = Quart(__name__)
qapp = Qapp(app, session_values=["counter"])


@app.post("/number")
async def number() -> dict[str, int]:
    """A number no other request gets, on any worker: one atomic step in the store."""
    return {"number": await qapp.store().incr("number"), "worker": os.getpid()}


# The wrong way: a module global, one per worker, read and written in two steps.
naive_count = 0


@app.post("/naive-number")
async def naive_number() -> dict[str, int]:
    global naive_count
    seen = naive_count
    await asyncio.sleep(0)  # any await (a query, a log call) lets another request in here
    naive_count = seen + 1
    return {"number": naive_count, "worker": os.getpid()}


@app.get("/")
async def show() -> dict[str, int]:
    """This client's counter; reading it creates no session."""
    return {"counter": await session.value("counter") or 0}


@app.post("/inc")
async def inc() -> dict[str, int]:
    return {"counter": await session.incr("counter")}


@app.post("/dec")
async def dec() -> dict[str, int]:
    return {"counter": await session.incr("counter", -1)}
