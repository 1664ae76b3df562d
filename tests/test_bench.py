"""The benchmark command starts, measures one route briefly, and writes valid results.

This is a smoke test of the machinery (real hypercorn, real wrk), not a
benchmark: speed is reported by ``python -m bench``, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
