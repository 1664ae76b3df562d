"""The benchmark command starts, measures one route briefly, and writes valid results.

This is a smoke test of the machinery (real hypercorn, real wrk), not a
benchmark: speed is reported by ``python -m bench``, never asserted here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from bench import ceilings, hotspots
from bench.peers.keys import seed
from bench.peers.server import CeilingServer, HypercornCeilingServer, UvicornServer
from bench.routes import CACHE_KEY, CACHE_VALUE, ROUTES, prepare
from qapp.testing import HypercornServer, PostgresServer, RedisServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_bench_measures_health_for_a_second_and_writes_json(tmp_path: Path) -> None:
    """`python -m bench` on /health for 1 s on each server writes JSON with the measurements."""
    argv = [sys.executable, "-m", "bench", "--duration", "1", "--warmup", "0"]
    argv += ["--workers", "1", "--stores", "sqlite", "--routes", "health", "-c", "8"]
    argv += ["--servers", "hypercorn,granian"]
    argv += ["--high-connections", "0", "--no-peer", "--no-ceilings", "--no-chart"]
    argv += ["--out", str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

    data = json.loads((tmp_path / "results.json").read_text())
    assert {"started", "seconds", "settings", "machine", "measurements", "targets"} <= set(data)
    assert data["settings"]["duration"] == 1
    hypercorn, granian = data["measurements"]
    for m, server in ((hypercorn, "qapp"), (granian, "qapp-granian")):
        assert (m["server"], m["workers"], m["store"], m["label"], m["connections"]) == (
            server,
            1,
            "sqlite",
            "GET /health",
            8,
        )
        assert m["available"] is True
        assert m["requests"] > 0
        assert m["rps"] > 0
        assert 0 < m["p50_ms"] <= m["p99_ms"] <= m["max_ms"]
        assert m["statuses"] == {"200": m["requests"]}
        assert m["non_2xx"] == 0
        assert m["cpu_ms_per_request"] > 0
    # Every target is reported; those needing routes not run say so.
    assert data["targets"]
    assert all({"name", "measured", "goal", "met"} <= set(t) for t in data["targets"])
    table = (tmp_path / "results.md").read_text()
    assert "| qapp · hypercorn | 1 | sqlite | `GET /health` | 8 |" in table
    assert "| qapp · granian | 1 | sqlite | `GET /health` | 8 |" in table


def test_bench_measures_the_atomic_counter_on_postgresql_beside_pgbench(tmp_path: Path) -> None:
    """`--stores postgresql` loads the atomic counter on a PostgreSQL it starts, and pgbench's
    UPSERT rate on that server is reported as the store's ceiling, set beside the route."""
    argv = [sys.executable, "-m", "bench", "--duration", "1", "--warmup", "0"]
    argv += ["--workers", "1", "--stores", "postgresql", "--routes", "atomic", "-c", "8"]
    argv += ["--servers", "granian", "--high-connections", "0", "--no-peer", "--no-chart"]
    argv += ["--no-metrics-cost", "--out", str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr

    data = json.loads((tmp_path / "results.json").read_text())
    (m,) = data["measurements"]
    assert (m["server"], m["store"], m["label"]) == (
        "qapp-granian",
        "postgresql",
        "POST /counter/atomic",
    )
    assert m["available"] is True
    assert m["requests"] > 0
    assert m["statuses"] == {"200": m["requests"]}
    ceiling = {c["store"]: c for c in data["ceilings"]}["postgresql"]
    assert ceiling["reason"] is None
    assert ceiling["ops_per_s"] > 0
    assert "pgbench -M prepared -c 8" in ceiling["how"]
    assert data["machine"]["postgres"].startswith("postgres (PostgreSQL)")
    target = next(t for t in data["targets"] if t["name"].startswith("atomic req/s"))
    # /health was not run, so the ratio is reported as not measured, never as met.
    assert target["met"] is None
    # The peers were left out (--no-peer): no target stands against them.
    assert not [t["name"] for t in data["targets"] if "peer" in t["name"]]
    table = (tmp_path / "results.md").read_text()
    assert "| postgresql UPSERT |" in table
    assert "| qapp · granian | 1 | postgresql |" in table
    assert "atomic ÷ ceiling" in table


#: The one-store-call reads the fast path is held to, beside the peers doing the same calls.
READS = ("cache-get", "session-read", "me")


def test_bench_measures_the_reads_on_qapp_the_fastapi_peer_and_both_ceilings(
    tmp_path: Path,
) -> None:
    """The cache, session and logged-in-user reads run on qapp (hypercorn, granian), FastAPI
    and the bare-ASGI ceilings on both servers with only 2xx answers, and each read gets its
    ratio targets against FastAPI and the ceilings, measured."""
    argv = [sys.executable, "-m", "bench", "--duration", "1", "--warmup", "0"]
    argv += ["--workers", "1", "--stores", "redis", "--routes", ",".join(READS), "-c", "4"]
    argv += ["--threads", "1", "--servers", "hypercorn,granian", "--high-connections", "0"]
    argv += ["--no-flask", "--no-metrics-cost", "--no-ceilings", "--no-chart"]
    argv += ["--out", str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr

    data = json.loads((tmp_path / "results.json").read_text())
    cells = {(m["server"], m["route"]): m for m in data["measurements"]}
    servers = ("qapp", "qapp-granian", "fastapi", "ceiling", "ceiling-hypercorn")
    assert set(cells) == {(server, route) for server in servers for route in READS}
    for m in cells.values():
        assert m["available"] is True, m.get("unavailable")
        assert m["requests"] > 0
        assert m["statuses"] == {"200": m["requests"]}
    targets = {(t["name"], t["setting"]): t for t in data["targets"]}
    setting = "1 worker(s), redis, 4 connections"
    for route in READS:
        for name in (
            f"qapp on granian {route} ≥ 1.2 × FastAPI peer {route}, 0 errors",
            f"qapp on granian {route} ≥ 0.6 × bare-ASGI ceiling on granian {route}, 0 errors",
            f"qapp on hypercorn {route} ≥ 0.8 × bare-ASGI ceiling on hypercorn {route}, 0 errors",
        ):
            target = targets[(name, setting)]
            assert target["measured"] is not None
            assert target["met"] is (target["measured"] >= float(target["goal"][2:]))
    table = (tmp_path / "results.md").read_text()
    assert "hypercorn ÷ bare hypercorn" in table
    assert "| 1 | `GET /auth/me` | 4 |" in table
    # The Flask peer was left out: no target stands against it.
    assert not [t for t in data["targets"] if "Flask" in t["name"]]


def _redis_calls(redis: RedisServer) -> dict[str, int]:
    """Redis's count of each command served so far (``INFO commandstats``)."""
    out = subprocess.run(
        [str(Path(redis.binary).with_name("redis-cli")), "-p", str(redis.port), "INFO",
         "commandstats"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    calls = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_") :].partition(":")
            calls[name] = int(fields.split(",")[0].removeprefix("calls="))
    return calls


def test_the_peers_reads_make_the_same_redis_calls_as_qapps(tmp_path: Path) -> None:
    """One request of each read costs the same Redis commands on the FastAPI peer and on both
    bare-ASGI ceilings as on qapp: one GET for the cache, two for the session counter, three
    for the logged-in user."""
    with RedisServer() as redis:
        cookie = seed(redis.url, CACHE_VALUE, CACHE_KEY)
        env = {"QAPP_STORE_URL": redis.url, "QAPP_INSTANCE_PATH": str(tmp_path / "instance")}
        servers = {
            "qapp": HypercornServer(workers=1, env=env, server="granian"),
            "fastapi": UvicornServer(redis_url=redis.url, workers=1),
            "ceiling": CeilingServer(redis_url=redis.url, workers=1),
            "ceiling-hypercorn": HypercornCeilingServer(redis_url=redis.url, workers=1),
        }
        calls: dict[tuple[str, str], dict[str, int]] = {}
        for name, server in servers.items():
            with server:
                for route in READS:
                    headers, why = prepare(
                        server.url, ROUTES[route], None if name == "qapp" else cookie
                    )
                    assert why is None, why
                    # A worker's first read of a session renews its expiry; later ones do not.
                    _get(server.url + ROUTES[route].path, headers)
                    before = _redis_calls(redis)
                    _get(server.url + ROUTES[route].path, headers)
                    after = _redis_calls(redis)
                    calls[(name, route)] = {
                        command: n - before.get(command, 0)
                        for command, n in after.items()
                        if n != before.get(command, 0) and command != "info"
                    }
    expected = {
        "cache-get": {"get": 1},
        "session-read": {"mget": 1},
        "me": {"mget": 1, "get": 1},
    }
    for (name, route), seen in calls.items():
        assert seen == expected[route], (name, route)


def _get(url: str, headers: dict[str, str]) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        assert r.status == 200


def test_hotspots_profile_one_qapp_worker_under_a_routes_load() -> None:
    """`bench.hotspots` profiles one qapp worker under a second of `/auth/me`: own time comes
    back by package, qapp's among them, and by function, each share a percentage."""
    profile = hotspots.profile_route("me", connections=4, seconds=1)
    assert "qapp" in {p.function for p in profile.packages}
    assert profile.functions
    for spot in [*profile.packages, *profile.functions]:
        assert 0 <= spot.share <= 100
        assert spot.calls > 0
    # Every package is listed: their shares (each rounded) add up to the whole.
    assert abs(sum(p.share for p in profile.packages) - 100) < 3
    assert hotspots.summary(profile).startswith("by package: ")


def test_pgbench_ceiling_increments_the_stores_own_row(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """The ceiling runs the store's very UPSERT: its key ends up holding an integer counter."""
    c = ceilings.postgres_upsert(postgres_server, tmp_path, connections=4, seconds=1, threads=2)
    assert c.reason is None, c.reason
    assert c.ops_per_s is not None
    assert c.ops_per_s > 0
    value = postgres_server.psql(
        "SELECT value::text FROM qapp_kv WHERE key = convert_to('pgbench-ceiling', 'UTF8')"
    ).strip()
    assert value.isdigit()
    assert int(value) > 0
    # No bind parameter of the store's is left for pgbench to trip on.
    assert re.search(r"\$[0-9]", ceilings.PGBENCH_INCR) is None


def test_bench_refuses_an_unknown_store_in_one_line() -> None:
    """A misspelt store is a usage error naming the known ones, before anything starts."""
    argv = [sys.executable, "-m", "bench", "--stores", "postgres"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown stores ['postgres']; known: sqlite, redis, postgresql" in proc.stderr
    assert "Traceback" not in proc.stderr
