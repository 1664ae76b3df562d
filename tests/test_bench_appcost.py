"""``python -m bench.appcost`` calls each app in process and writes every app × route cell.

A smoke test of the machinery at a tiny size (its own redis-server, the three
apps, their lifespans), not a benchmark: no speed is asserted.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import appcost
from bench.routes import ROUTES, Route

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_appcost_writes_every_app_on_every_route(tmp_path: Path) -> None:
    """Every app × route cell is measured, the ratios follow, and the profile is written."""
    routes = ("health", "cache-get", "me")
    argv = [sys.executable, "-W", "default::ResourceWarning", "-m", "bench.appcost"]
    argv += ["--routes", ",".join(routes), "--requests", "200", "--warmup", "20"]
    argv += ["--repeat", "1", "-c", "8", "--profile", "cache-get", "--out", str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # Every task, connection and lifespan it started was ended before the loop closed.
    for trouble in ("Task was destroyed", "never awaited", "Exception ignored", "ResourceWarning"):
        assert trouble not in proc.stderr, proc.stderr

    data = json.loads((tmp_path / "appcost.json").read_text())
    assert data["settings"]["requests"] == 200
    assert data["errors"] == []
    cells = {(c["app"], c["route"]): c for c in data["cells"]}
    expected = {(app, route) for app in ("qapp", "fastapi") for route in routes}
    expected |= {("quart", route) for route in appcost.QUART_ROUTES}
    assert set(cells) == expected
    for cell in cells.values():
        assert cell["error"] is None
        assert cell["us_per_request"] > 0
        assert len(cell["rounds_us"]) == 1
    rows = {row["route"]: row for row in data["rows"]}
    for route in routes:
        assert rows[route]["qapp"] > 0
        assert rows[route]["fastapi"] > 0
        assert rows[route]["qapp/fastapi"] > 0
    assert rows["me"]["quart"] is None
    assert rows["me"]["qapp/quart"] is None
    assert rows["cache-get"]["qapp/quart"] > 0

    markdown = (tmp_path / "appcost.md").read_text()
    for route in routes:
        assert f"| `{ROUTES[route].label}` |" in markdown
    assert "| qapp ÷ FastAPI |" in markdown
    assert data["profile"]["route"] == "cache-get"
    assert Path(data["profile"]["path"]).is_file()
    assert set(data["profile"]["cumulative"]) == set(appcost.PROFILED_PACKAGES)
    assert "GET /cache/bench" in proc.stdout


def test_a_route_answering_other_than_200_is_an_error_not_a_measurement(tmp_path: Path) -> None:
    """A route an app answers with a 404 is an error of one line; the others are measured."""
    nowhere = Route("nowhere", "GET", "/bench/nowhere", "served by no app")
    settings = appcost.Settings(
        routes=(ROUTES["health"], nowhere), requests=50, warmup=0, repeat=1, concurrency=4
    )
    run = appcost.run(settings)

    for app in appcost.APPS:
        health = run.cell(app, "health")
        assert health is not None
        assert health.error is None
        assert health.us is not None
        assert health.us > 0
    # The bare Quart app serves health and the cached value only: not an error.
    assert run.cell("quart", "nowhere") is None
    for app in ("qapp", "fastapi"):
        cell = run.cell(app, "nowhere")
        assert cell is not None
        assert cell.error is not None
        assert cell.error.startswith("GET /bench/nowhere answered 404")
        assert "\n" not in cell.error
        assert cell.us is None
        assert cell.rounds_us == []
    assert len(run.errors) == 2

    data, paths = appcost.write(run, tmp_path)
    assert data["errors"] == run.errors
    row = next(row for row in data["rows"] if row["route"] == "nowhere")
    assert (row["qapp"], row["fastapi"], row["qapp/fastapi"]) == (None, None, None)
    assert "Not measured:" in paths[1].read_text()


def test_an_answer_other_than_200_under_load_stops_every_caller() -> None:
    """Past the first answers, a 503 stops the load with one line, and no caller is left."""
    answered = 0

    async def flaky(scope: appcost.Scope, receive: appcost.Receive, send: appcost.Send) -> None:
        nonlocal answered
        answered += 1
        await asyncio.sleep(0)
        status = 200 if answered <= 20 else 503
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b'{"error": "store_unavailable"}'})

    async def main() -> None:
        call = appcost.Caller("flaky", flaky)
        with pytest.raises(
            appcost.NotReady, match=r"^GET /health answered 503 \(store_unavailable\)$"
        ):
            await appcost.load(call, appcost.request_scope("GET", "/health"), 1000, 8)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())
    assert answered < 1000
