"""The cost curve (``python -m bench --scale``) fills real stores, measures and writes its files.

Small sizes only: this checks the machinery, never a speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scale import curve
from bench.scale_load import OPS, ScaleSettings
from qapp.testing import PostgresServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_scale_on_sqlite_and_redis_writes_json_markdown_and_chart(tmp_path: Path) -> None:
    """`--scale --sizes 1e2,1e3` grows SQLite and Redis, measures every operation at each
    size and the cleanup of expired rows, and writes scale.json, scale.md and scale.png."""
    argv = [sys.executable, "-m", "bench", "--scale", "--sizes", "1e2,1e3"]
    argv += ["--stores", "sqlite,redis", "--ops", "100", "-c", "8", "--sweep-cap", "3"]
    argv += ["--out", str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

    data = json.loads((tmp_path / "scale.json").read_text())
    assert [c["store"] for c in data["curves"]] == ["sqlite", "redis"]
    for c in data["curves"]:
        assert [s["size"] for s in c["steps"]] == [100, 1000]
        for step in c["steps"]:
            assert step["bytes_per_session"] > 0
            assert step["rows_per_s"] > 0
            for op in OPS:
                stats = step["ops"][op]
                assert stats["count"] == 100
                assert 0 < stats["p50_ms"] <= stats["p99_ms"] <= stats["max_ms"]
        sweep = c["sweep"]
        assert (sweep["size"], sweep["expired"]) == (1000, 500)
        assert all(sweep["baseline"][op]["count"] == 100 for op in OPS)
    sqlite, redis = data["curves"]
    # SQLite's own sweep deletes every expired row; Redis deletes them itself, some at least.
    assert sqlite["sweep"]["how"] == "store.sweep()"
    assert sqlite["sweep"]["removed"] == 500
    assert redis["sweep"]["how"] == "active expiry"
    assert 0 < redis["sweep"]["removed"] <= 500
    # Both targets for every store and operation, each with a verdict from this run.
    assert len(data["targets"]) == 2 * 2 * len(OPS)
    assert all(t["met"] is not None for t in data["targets"] if t["measured"] is not None)
    table = (tmp_path / "scale.md").read_text()
    assert "| sqlite | 10^3 |" in table
    assert "| redis | 10^2 |" in table
    assert (tmp_path / "scale.png").read_bytes().startswith(b"\x89PNG")
    assert "Targets (" in proc.stdout


async def test_scale_fills_postgresql_with_what_it_says(
    postgres_server: PostgresServer, postgresql_url: str, tmp_path: Path
) -> None:
    """On PostgreSQL the curve writes N sessions, N cache values and the counters through
    the store API, and its sweep deletes every expired session it wrote."""
    settings = ScaleSettings(sizes=(100, 1000), stores=("postgresql",), ops=50, concurrency=4)
    result = await curve("postgresql", postgresql_url, tmp_path, settings, lambda line: None)

    assert [s.size for s in result.steps] == [100, 1000]
    assert all(s.bytes_per_session > 0 for s in result.steps)
    assert result.sweep is not None
    assert (result.sweep.how, result.sweep.expired, result.sweep.removed) == (
        "store.sweep()",
        500,
        500,
    )
    count = postgres_server.psql(
        "SELECT count(*) FILTER (WHERE key LIKE 'session:%'), "
        "count(*) FILTER (WHERE key LIKE 'cache:%'), "
        "count(*) FILTER (WHERE key LIKE 'counter:%') "
        "FROM (SELECT convert_from(key, 'UTF8') AS key FROM qapp_kv) AS k"
    )
    assert count.strip() == "1000|1000|1000"


def test_scale_refuses_a_size_that_is_not_a_whole_number_in_one_line(tmp_path: Path) -> None:
    """A size like `1e3,abc` is a usage error naming what is wanted, before anything starts."""
    argv = [sys.executable, "-m", "bench", "--scale", "--sizes", "1e3,abc", "--out", str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "want whole numbers from 1 to 1e+07 like 1e3,1e4, got 'abc'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())
