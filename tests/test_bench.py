"""The benchmark command starts, measures one route briefly, and writes valid results.

This is a smoke test of the machinery (real hypercorn, real wrk), not a
benchmark: speed is reported by ``python -m bench``, never asserted here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import ceilings
from qapp.testing import PostgresServer

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
