"""The peers' one-store-call routes, shared by the FastAPI peer and the bare-ASGI ceilings.

Each takes the peer's ``redis.asyncio`` client and answers ``(status,
body)`` with the same JSON as qapp's route, making the same Redis calls in
the same order (see :mod:`bench.peers.keys`). Sharing them keeps the
peers' work identical; only what sits around them differs.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as redis

from bench.peers.keys import COOKIE, cache_key, counter_key, generation_key, session_key, user_key

Answer = tuple[int, dict[str, Any]]
UNAUTHORIZED: Answer = (401, {"error": "unauthorized", "message": "log in first"})


def session_id(cookie_header: str | None) -> str | None:
    """The session id in a ``Cookie`` header, or None."""
    for part in (cookie_header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


async def cache_get(client: redis.Redis, key: str) -> Answer:
    """One GET: the cached value at ``key``, or 404."""
    raw = await client.get(cache_key(key))
    if raw is None:
        return 404, {"error": "not_found", "message": f"no cached value for key {key!r}"}
    return 200, {"key": key, "value": json.loads(raw).get("value")}


async def _session(client: redis.Redis, sid: str) -> tuple[Any, Any]:
    """One MGET: the session and its counter, as qapp reads a session with its values."""
    session, counter = await client.mget(session_key(sid), counter_key(sid))
    return session, counter


async def session_counter(client: redis.Redis, sid: str | None) -> Answer:
    """One MGET: the session and its counter; 0 without a session."""
    if sid is None:
        return 200, {"counter": 0}
    session, raw = await _session(client, sid)
    if session is None:
        return 200, {"counter": 0}
    value = None if raw is None else json.loads(raw)
    return 200, {"counter": value if isinstance(value, int) else 0}


#: Session id -> the user it named when this process last read it, as qapp's
#: worker remembers: the next read fetches that user's generation with the session.
#: A benchmark peer's own memory, bounded like qapp's.
_SESSION_USERS: dict[str, str] = {}
_SESSION_USERS_KEPT = 10_000


async def me(client: redis.Redis, sid: str | None) -> Answer:
    """One MGET of the session, its counter and (once the session is known) the user's
    login generation; then a GET of the user's record; else 401."""
    if sid is None:
        return UNAUTHORIZED
    hint = _SESSION_USERS.get(sid)
    keys = [session_key(sid), counter_key(sid)]
    if hint is not None:
        keys.append(generation_key(hint))
    found = await client.mget(keys)
    raw = found[0]
    if raw is None:
        return UNAUTHORIZED
    session = json.loads(raw)
    username = session.get("_user_id")
    if not isinstance(username, str):
        return UNAUTHORIZED
    if len(_SESSION_USERS) >= _SESSION_USERS_KEPT:
        _SESSION_USERS.clear()
    _SESSION_USERS[sid] = username
    generation = found[2] if hint == username else await client.get(generation_key(username))
    if generation is None or json.loads(generation) != session.get("_user_gen"):
        return UNAUTHORIZED
    record = await client.get(user_key(username))
    if record is None or "password_hash" not in json.loads(record):
        return UNAUTHORIZED
    return 200, {"username": username}
