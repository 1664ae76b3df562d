"""Abuse limits against real ``qapp serve`` with 4 workers, on SQLite and on Redis.

The server trusts 127.0.0.1 as a proxy (``QAPP_TRUSTED_PROXIES``), so each
test plays a client of its own by its ``X-Forwarded-For`` address (from the
documentation range 2001:db8::/32: a header value, never a destination).
That also proves the proxy rule: the address the proxy saw is the client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from qapp.testing import HypercornServer, RedisServer, fire, fresh_connections

pytestmark = pytest.mark.slow

_addresses = itertools.count(1)


def new_client() -> dict[str, str]:
    """Headers of a client no other test is: an address in a /64 of its own (limits count
    IPv6 clients per /64), from 2001:db8::/32, for documentation."""
    return {"X-Forwarded-For": f"2001:db8:{next(_addresses):x}::1"}


class Deployment:
    """A 4-worker server and a way to read its store directly."""

    def __init__(self, server: HypercornServer, store: str, instance: Path) -> None:
        self.server = server
        self.store = store
        self.instance = instance
        self.url = server.url

    def entries(self, prefix: str) -> dict[str, float | None]:
        """Every live key under ``prefix`` and its remaining ttl (None: never expires)."""
        if self.store == "sqlite":
            with sqlite3.connect(self.instance / "qapp.db") as conn:
                rows = conn.execute(
                    "SELECT key, expires_at FROM qapp_kv WHERE key LIKE ? "
                    "AND (expires_at IS NULL OR expires_at > ?)",
                    (prefix + "%", time.time()),
                ).fetchall()
            conn.close()
            return {k: None if e is None else e - time.time() for k, e in rows}
        with redis.Redis.from_url(self.redis_url) as client:
            found = {}
            for raw in client.scan_iter(match=f"qapp:k:{prefix}*", count=1000):
                ttl = client.pttl(raw)
                key = raw.decode().removeprefix("qapp:k:")
                found[key] = None if ttl == -1 else ttl / 1000
            return found

    redis_url = ""


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """qapp serve, 4 workers, default limits; SQLite in the instance folder, or a Redis."""
    instance = tmp_path_factory.mktemp("abuse") / "instance"
    env = {
        "QAPP_INSTANCE_PATH": str(instance),
        "QAPP_TRUSTED_PROXIES": "127.0.0.1",
        "QAPP_SECRET_KEY": "",
        "QAPP_STORE_URL": "",
        "QAPP_BODY_TIMEOUT": "1",
    }
    with RedisServer() as redis_server:
        if request.param == "redis":
            env["QAPP_STORE_URL"] = redis_server.url
        with HypercornServer(workers=4, env=env) as server:
            deployed = Deployment(server, request.param, instance)
            deployed.redis_url = redis_server.url
            yield deployed


def login_statuses(
    url: str, headers: dict[str, str], attempts: list[dict[str, str]]
) -> list[httpx.Response]:
    with httpx.Client(base_url=url, headers=headers) as client:
        return [client.post("/auth/login", json=body) for body in attempts]


def test_brute_force_on_one_account_is_throttled(deployment: Deployment) -> None:
    """30 wrong passwords for one account from one client meet a 429 by the 11th, and so
    does the right password from that client; from another client the owner logs in."""
    client = new_client()
    creds = {"username": "victim1", "password": "right password"}
    with httpx.Client(base_url=deployment.url, headers=client) as c:
        assert c.post("/auth/register", json=creds).status_code == 201
    wrong = [{"username": "victim1", "password": f"guess {n:04d}"} for n in range(30)]
    answers = login_statuses(deployment.url, client, wrong)
    statuses = [a.status_code for a in answers]
    first = statuses.index(429)
    assert first <= 10, statuses  # 5 a quarter hour: at most 5 + 5 across a window boundary
    assert set(statuses[:first]) == {401}
    assert all(s == 429 for s in statuses[first:])
    refused = answers[first]
    assert refused.json()["error"] == "too_many_requests"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Remaining"] == "0"
    # The right password does not get through the throttle either: no oracle.
    (late,) = login_statuses(deployment.url, client, [creds])
    assert late.status_code == 429
    # The stranger spent its own budget for the account, not the owner's.
    (owner,) = login_statuses(deployment.url, new_client(), [creds])
    assert owner.status_code == 200


def test_guesses_spread_over_clients_meet_the_account_ceiling(deployment: Deployment) -> None:
    """One guess each from 60 clients: 50 get 401, then the account's ceiling answers 429,
    to the owner too (the documented price of the ceiling)."""
    creds = {"username": "victim2", "password": "right password"}
    with httpx.Client(base_url=deployment.url, headers=new_client()) as c:
        assert c.post("/auth/register", json=creds).status_code == 201
    # The ceiling's window is a quarter hour: start well inside one.
    left = 900 - time.time() % 900
    if left < 60:
        time.sleep(left + 0.05)
    statuses = [
        login_statuses(
            deployment.url, new_client(), [{"username": "victim2", "password": f"g{n:08d}"}]
        )[0].status_code
        for n in range(60)
    ]
    assert statuses == [401] * 50 + [429] * 10, statuses
    (owner,) = login_statuses(deployment.url, new_client(), [creds])
    assert owner.status_code == 429


def _poll_health(url: str, stop: threading.Event, latencies: list[float]) -> None:
    """Time /health on a fresh connection every 10 ms, as a load balancer would, until ``stop``.

    In a thread of its own, with a client of its own: the flood's client work
    must not count as the server's latency.
    """
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=url, timeout=10, limits=limits) as client:
        while not stop.is_set():
            started = time.perf_counter()
            response = client.get("/health")
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200
            time.sleep(0.01)


@pytest.mark.serial
def test_login_flood_for_unknown_users_leaves_health_answering(deployment: Deployment) -> None:
    """300 concurrent logins for unknown users from one client: /health stays fast."""

    async def flood(headers: dict[str, str]) -> list[int]:
        async with fresh_connections(300, timeout=30) as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        f"{deployment.url}/auth/login",
                        json={"username": f"nobody_{n}", "password": "some password"},
                        headers=headers,
                    )
                    for n in range(300)
                )
            )
        return [a.status_code for a in answers]

    stop = threading.Event()
    latencies: list[float] = []
    poller = threading.Thread(target=_poll_health, args=(deployment.url, stop, latencies))
    poller.start()
    try:
        time.sleep(0.3)
        statuses = asyncio.run(flood(new_client()))
        time.sleep(0.3)
    finally:
        stop.set()
        poller.join()
    assert set(statuses) <= {401, 429, 503}
    assert statuses.count(429) >= 250  # the client's limit refused most without a hash
    assert len(latencies) >= 10
    p99 = statistics.quantiles(latencies, n=100)[98]
    # Unprotected, /health waits seconds behind 300 password hashes; protected, it
    # stays well under half a second even on a slow 2-core machine (about 0.25 s there,
    # under 0.2 s on a faster one).
    assert p99 < 0.5, f"/health p99 {p99 * 1000:.0f} ms during the flood"


def test_anonymous_sessions_stop_at_the_quota(deployment: Deployment) -> None:
    """5,000 anonymous session creations from one client store at most the quota; the rest 429."""
    before = sum(":" not in k.removeprefix("session:") for k in deployment.entries("session:"))
    report = asyncio.run(
        fire(
            f"{deployment.url}/session/counter/inc",
            requests=5000,
            concurrency=50,
            headers=new_client(),
        )
    )
    created = [a for a in report.answers if a.status == 200]
    refused = [a for a in report.answers if a.status == 429]
    assert len(created) + len(refused) == 5000
    assert len(created) <= 200  # the default quota: 200 new sessions per client per hour
    sessions = sum(":" not in k.removeprefix("session:") for k in deployment.entries("session:"))
    assert sessions - before == len(created)


def test_every_cache_memo_and_session_entry_expires(deployment: Deployment) -> None:
    """Cache entries (even without a ttl), memo bookkeeping and sessions all carry a ttl."""
    with httpx.Client(base_url=deployment.url, headers=new_client()) as c:
        assert c.put("/cache/forever", json={"big": "x" * 1000}).status_code == 204
        assert c.get("/memo/some-key").status_code == 200
        assert c.post("/session/counter/inc").status_code == 200
    for prefix in ("cache:", "memo:", "session:"):
        entries = deployment.entries(prefix)
        assert entries, prefix
        assert all(ttl is not None for ttl in entries.values()), entries


def test_answers_that_read_the_session_are_private(deployment: Deployment) -> None:
    """Logged in, /auth/me and /session/counter carry Vary: Cookie and Cache-Control: no-store."""
    creds = {"username": "private1", "password": "right password"}
    with httpx.Client(base_url=deployment.url, headers=new_client()) as c:
        assert c.post("/auth/register", json=creds).status_code == 201
        assert c.post("/auth/login", json=creds).status_code == 200
        for path in ("/auth/me", "/session/counter"):
            response = c.get(path)
            assert response.status_code == 200
            assert "cookie" in response.headers["Vary"].lower()
            assert response.headers["Cache-Control"] == "private, no-store"


def test_cross_site_posts_are_refused_and_change_nothing(deployment: Deployment) -> None:
    """A cross-site bodyless POST with the session cookie gets 403 and changes nothing;
    same-origin passes, and so does a cross-site one without the cookie."""
    creds = {"username": "crosssite1", "password": "right password"}
    with httpx.Client(base_url=deployment.url, headers=new_client()) as c:
        assert c.post("/auth/register", json=creds).status_code == 201
        assert c.post("/auth/login", json=creds).status_code == 200
        before = c.get("/counter/atomic").json()["value"]
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            for path in ("/counter/atomic", "/auth/logout"):
                refused = c.post(path, headers=headers)
                assert refused.status_code == 403
                assert refused.json()["error"] == "cross_site_request"
        assert c.get("/counter/atomic").json()["value"] == before
        assert c.get("/auth/me").status_code == 200  # logout was refused: still logged in
        same = c.post("/counter/atomic", headers={"Origin": deployment.url})
        assert same.status_code == 200
    # Without the session cookie there is nothing to forge: anyone may send it.
    with httpx.Client(base_url=deployment.url, headers=new_client()) as c:
        cookieless = c.post("/counter/atomic", headers={"Origin": "http://evil.example"})
        assert cookieless.status_code == 200
        assert cookieless.json()["value"] == same.json()["value"] + 1


def test_instance_folder_and_database_are_private(deployment: Deployment) -> None:
    """The instance folder is 0700; the SQLite file, its WAL and the key file are 0600."""
    assert deployment.instance.stat().st_mode & 0o777 == 0o700
    assert (deployment.instance / "secret_key").stat().st_mode & 0o777 == 0o600
    if deployment.store == "sqlite":
        for name in ("qapp.db", "qapp.db-wal", "qapp.db-shm"):
            assert (deployment.instance / name).stat().st_mode & 0o777 == 0o600, name


def test_no_server_header_and_no_cleartext_http2(deployment: Deployment) -> None:
    """Answers name no server; h2c upgrades are answered in HTTP/1.1, the HTTP/2 preface refused."""
    host, port = "127.0.0.1", deployment.server.port
    response = httpx.get(f"{deployment.url}/health")
    assert "server" not in response.headers
    import socket

    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        )
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        answer = sock.recv(64)
        assert not answer.startswith(b"\x00"), answer  # no HTTP/2 SETTINGS frame
    assert "Traceback" not in deployment.server.log_path.read_text()


def test_a_stalled_body_is_cut_off(deployment: Deployment) -> None:
    """A body that never arrives gets a 408 after the body timeout instead of holding on."""
    import socket

    with socket.create_connection(("127.0.0.1", deployment.server.port), timeout=10) as sock:
        sock.sendall(
            b"PUT /cache/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n[1,"
        )
        started = time.monotonic()
        answer = sock.recv(256)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 5


def test_huge_numbers_get_a_plain_400(deployment: Deployment) -> None:
    """A 50,000-digit number is a 400 whose message names no interpreter internals."""
    body = "1" * 50_000
    response = httpx.put(
        f"{deployment.url}/cache/digits",
        content=body,
        headers={"Content-Type": "application/json", **new_client()},
    )
    assert response.status_code == 400
    message = json.dumps(response.json())
    assert "digits" in message
    assert "sys." not in message
    assert "int_max_str" not in message
