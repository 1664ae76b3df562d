"""A full stop and start of hypercorn on the SQLite default: the state that should survive does."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest

from qapp.testing import HypercornServer

pytestmark = pytest.mark.slow

#: Seconds a short-lived cache entry lives: it must expire while qapp is down.
SHORT_TTL = 1.0


def session_cookie(response: httpx.Response) -> dict[str, str]:
    """The session cookie a response set, as a cookies mapping."""
    value = response.cookies.get("session")
    assert value, "no session cookie set"
    return {"session": value}


async def test_state_survives_a_full_restart(tmp_path: Path) -> None:
    """Counters, a logged-in session and its counter, live cache entries and users survive."""
    instance = tmp_path / "instance"
    # The defaults: a SQLite file and a secret key generated in the instance folder.
    env = {"QAPP_INSTANCE_PATH": str(instance), "QAPP_STORE_URL": "", "QAPP_SECRET_KEY": ""}
    name = f"u{uuid.uuid4().hex[:12]}"
    creds = {"username": name, "password": "password of " + name}
    with HypercornServer(workers=4, env=env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            assert (await c.post("/auth/register", json=creds)).status_code == 201
            login = await c.post("/auth/login", json=creds)
            assert login.status_code == 200
            # The client keeps it and sends it from here on.
            cookies = session_cookie(login)
            for _ in range(3):
                assert (await c.post("/session/counter/inc")).status_code == 200
            for strategy in ("atomic", "shared-locked"):
                for _ in range(5):
                    assert (await c.post(f"/counter/{strategy}")).status_code == 200
            long = await c.put("/cache/kept", params={"ttl": 300}, json={"n": [1, 2]})
            short = await c.put("/cache/brief", params={"ttl": SHORT_TTL}, json="soon gone")
            assert (long.status_code, short.status_code) == (204, 204)
            short_put = time.monotonic()
            assert (await c.get("/cache/brief")).status_code == 200

        server.stop()  # SIGTERM to the parent: a clean shutdown
        stopped = time.monotonic()
        # The short entry's ttl must run out while qapp is down.
        await asyncio.sleep(max(0.0, SHORT_TTL + 0.1 - (stopped - short_put)))
        server.start()
        downtime = time.monotonic() - stopped

        # A fresh client whose only link to before is the cookie.
        async with httpx.AsyncClient(base_url=server.url, timeout=30, cookies=cookies) as c:
            me = await c.get("/auth/me")
            counter = await c.get("/session/counter")
            atomic = await c.get("/counter/atomic")
            locked = await c.get("/counter/shared-locked")
            next_atomic = await c.post("/counter/atomic")
            next_locked = await c.post("/counter/shared-locked")
            kept = await c.get("/cache/kept")
            brief = await c.get("/cache/brief")
            relogin = await c.post("/auth/login", json=creds)
            wrong = await c.post("/auth/login", json={**creds, "password": "not the password"})

    assert (me.status_code, me.json()) == (200, {"username": name})
    assert counter.json() == {"counter": 3}
    assert (atomic.json()["value"], next_atomic.json()["value"]) == (5, 6)
    assert (locked.json()["value"], next_locked.json()["value"]) == (5, 6)
    assert kept.json() == {"key": "kept", "value": {"n": [1, 2]}}
    assert brief.status_code == 404
    assert relogin.status_code == 200
    assert wrong.status_code == 401
    print(f"\nrestart: down {downtime:.2f} s (stop to all 4 workers serving); all state kept")
