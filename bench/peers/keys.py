"""What the peers read, written into Redis before the run: a cached value, a session, a user.

The peers serve the one-store-call routes with the same store calls qapp
makes for them, in the same order:

- ``GET /cache/bench``: one GET of the cached value;
- ``GET /session/counter``: one MGET of the session and its counter (qapp
  reads the session with its values in one call when the request starts);
- ``GET /auth/me``: one MGET of the session, its counter and the user's
  login generation (qapp checks it, so that logging out everywhere works;
  both read it with the session once the process has seen that session
  name its user), then one GET of the user's record (qapp's user loader).

Their session cookie is an opaque random id with no signature: a peer
written from scratch would do no more. qapp's cookie is signed, which qapp
pays for in CPU on every request that sends it.
"""

from __future__ import annotations

import json
import secrets

PREFIX = "bench-peer:"
#: The cookie every peer reads and the session id in it, one per run.
COOKIE = "session"
USERNAME = "bench_user"


def cache_key(key: str) -> str:
    return f"{PREFIX}cache:{key}"


def session_key(sid: str) -> str:
    return f"{PREFIX}session:{sid}"


def counter_key(sid: str) -> str:
    return f"{PREFIX}session:{sid}:counter"


def generation_key(username: str) -> str:
    return f"{PREFIX}user-generation:{username}"


def user_key(username: str) -> str:
    return f"{PREFIX}user:{username}"


def seed(redis_url: str, cache: dict[str, object], cache_name: str) -> str:
    """Write the peers' cached value, a logged-in session and its user; return the cookie."""
    import redis

    sid = secrets.token_urlsafe(32)
    with redis.Redis.from_url(redis_url) as client:
        client.set(cache_key(cache_name), json.dumps({"value": cache}))
        client.set(session_key(sid), json.dumps({"_user_id": USERNAME, "_user_gen": 1}))
        client.set(counter_key(sid), json.dumps(1))
        client.set(generation_key(USERNAME), json.dumps(1))
        # A record as qapp's service keeps one; the peers never check the password.
        record = {"username": USERNAME, "password_hash": "scrypt:32768:8:1$bench$" + "0" * 64}
        client.set(user_key(USERNAME), json.dumps(record))
    return f"{COOKIE}={sid}"
