"""002: what is made once for the app, and what once per request?

A database connection is costly and shared by every request: open it once per
worker in ``before_serving``, keep it in ``app.extensions``, close it in
``after_serving``. The user is known for one request only: loaded into ``g`` at
its start and gone at its end, since ``g`` is wiped after every request.

Run from inside ``examples/`` (users in ``instance/users.db``, demo user ada)::

    qapp serve --app per_request_user:app
    curl -c jar localhost:8000/login --json '{"username": "ada", "password": "lovelace"}'
    curl -b jar localhost:8000/me     # {"user": ..., "worker": ..., "connection_opened": 1}
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiosqlite
from quart import Quart, g, request
from werkzeug.security import check_password_hash, generate_password_hash

from qapp import Qapp, login_required

app = Quart(__name__, instance_path=os.environ.get("QAPP_INSTANCE_PATH"))
qapp = Qapp(app)
os.makedirs(app.instance_path, mode=0o700, exist_ok=True)  # user data: owner only
USERS_DB = os.path.join(app.instance_path, "users.db")


@app.before_serving
async def open_db() -> None:  # once per worker, for every request it serves
    db = await aiosqlite.connect(USERS_DB, isolation_level=None)
    await db.execute("CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, hash TEXT)")
    demo = ["ada", generate_password_hash("lovelace")]  # the demo user, seeded idempotently
    await db.execute("INSERT OR IGNORE INTO users VALUES (?, ?)", demo)
    app.extensions["users_db"] = db
    app.extensions["users_db_opened"] = app.extensions.get("users_db_opened", 0) + 1


@app.after_serving
async def close_db() -> None:
    await app.extensions.pop("users_db").close()


async def password_hash(name: str) -> str | None:
    db: aiosqlite.Connection = app.extensions["users_db"]
    async with db.execute("SELECT hash FROM users WHERE name = ?", [name]) as rows:
        row = await rows.fetchone()
    return None if row is None else str(row[0])


@qapp.user_loader  # runs at the start of each request whose session names a user
async def load_user(user_id: str) -> dict[str, str] | None:
    return None if await password_hash(user_id) is None else {"name": user_id}


@app.post("/login")
async def login() -> tuple[dict[str, Any], int]:
    form = await request.get_json(force=True)
    form = form if isinstance(form, dict) else {}
    name, password = str(form.get("username", "")), str(form.get("password", ""))
    known = await password_hash(name)
    # Hashing is slow on purpose: off the event loop, or every other request waits.
    if known is None or not await asyncio.to_thread(check_password_hash, known, password):
        return {"error": "unauthorized", "message": "wrong username or password"}, 401
    return {"user": await qapp.login_user(name)}, 200


@app.post("/logout")
async def logout() -> dict[str, Any]:
    await qapp.logout_user()
    return {"user": None}


@app.get("/me")
@login_required
async def me() -> dict[str, Any]:
    opened = app.extensions["users_db_opened"]
    return {"user": g.user, "worker": os.getpid(), "connection_opened": opened}


# The wrong way to keep something for the next request: g lives for one request.
@app.post("/naive/remember")
@app.get("/naive/recall")
async def naive() -> dict[str, Any]:
    if request.method == "POST":
        g.remembered = await request.get_json(force=True)
    return {"remembered": g.get("remembered"), "worker": os.getpid()}
