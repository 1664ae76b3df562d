"""``qapp race`` end to end: the real command against real hypercorn servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qapp.testing import HypercornServer, free_port

pytestmark = pytest.mark.slow


def qapp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``qapp`` command in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "qapp.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        # As a user piping it would: no terminal width from the test runner.
        env={**{k: v for k, v in os.environ.items() if k != "COLUMNS"}, **(env or {})},
        check=False,
    )


def results(run: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """The ``--json`` report's rows by strategy (and store, when there are several)."""
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    rows: dict[str, dict[str, Any]] = {}
    for row in report["results"]:
        rows[f"{row['strategy']}/{row['store']}/{row['workers']}"] = row
    return rows


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypercornServer]:
    """hypercorn with 2 workers on a SQLite file."""
    instance = tmp_path_factory.mktemp("race-cli")
    env = {
        "QAPP_STORE_URL": f"sqlite://{instance / 'race.db'}",
        "QAPP_INSTANCE_PATH": str(instance),
    }
    with HypercornServer(workers=2, env=env) as started:
        yield started


def counter(url: str, strategy: str) -> int:
    """The shared counter's value as the server reads it."""
    with urllib.request.urlopen(f"{url}/counter/{strategy}", timeout=5) as response:
        value: int = json.load(response)["value"]
        return value


def test_race_json_reports_what_the_server_counted(server: HypercornServer) -> None:
    """--json reports answers, distinct, lost and repeated that agree with the server's counters."""
    n = 200
    run = qapp(
        "race", "--url", server.url, "--strategy", "atomic,locked,shared-unsafe",
        "--requests", str(n), "--concurrency", str(n), "--json",
    )  # fmt: skip
    rows = results(run)
    atomic = rows["atomic/sqlite/None"]
    assert atomic["requests"] == atomic["answers"] == atomic["distinct"] == n
    assert (atomic["lost"], atomic["repeated"], atomic["errors"]) == (0, 0, 0)
    assert atomic["workers_seen"] == 2
    assert atomic["requests_per_second"] > 0
    assert counter(server.url, "atomic") == n

    # Each worker counts alone: nothing lost, but both workers handed out
    # 1, 2, …, so every number the smaller count reached is repeated.
    locked = rows["locked/sqlite/None"]
    assert locked["lost"] == 0
    assert locked["workers_seen"] == 2
    assert locked["distinct"] < n
    assert locked["repeated"] == n - locked["distinct"]

    # The shared counter started at 0 on this fresh server: what it holds now
    # is what stuck, and the command must report the rest as lost.
    shared = rows["shared-unsafe/sqlite/None"]
    assert shared["answers"] == n
    assert shared["lost"] == n - counter(server.url, "shared-unsafe")
    assert shared["repeated"] == n - shared["distinct"]


def test_race_prints_a_table(server: HypercornServer) -> None:
    """Without --json the command prints one table row per strategy, with the counts named."""
    run = qapp("race", "--url", server.url, "--strategy", "atomic", "--requests", "20")
    assert run.returncode == 0, run.stderr
    for heading in ("strategy", "answers", "distinct", "lost", "repeated", "workers seen"):
        assert heading in run.stdout
    row = next(line for line in run.stdout.splitlines() if "atomic" in line)
    assert "sqlite" in row
    assert "20" in row


def test_unreachable_server_is_a_clear_message() -> None:
    """A server that cannot be reached gets a one-line message and exit 1, not a traceback."""
    url = f"http://127.0.0.1:{free_port()}"
    run = qapp("race", "--url", url, "--json")
    assert run.returncode == 1
    assert f"cannot reach {url}" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert run.stdout == ""


def test_bad_arguments_are_usage_errors() -> None:
    """An unknown strategy or store is refused by the parser with the valid names."""
    run = qapp("race", "--strategy", "atomic,optimistic")
    assert run.returncode == 2
    assert "optimistic" in run.stderr
    assert "shared-locked" in run.stderr
    run = qapp("race", "--spawn", "--store", "postgres")
    assert run.returncode == 2
    assert "sqlite, redis, memory" in run.stderr


def _processes_mentioning(text: str) -> list[int]:
    """Pids of our processes whose command line or environment contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in blob:
            found.append(int(proc.name))
    return found


def test_spawn_runs_the_matrix_and_stops_everything(tmp_path: Path) -> None:
    """--spawn starts hypercorn on SQLite and on its own Redis, reports each cell, stops it all."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    run = qapp(
        "race", "--spawn", "--workers", "2", "--store", "sqlite,redis",
        "--strategy", "atomic,locked", "--requests", "60", "--concurrency", "60", "--json",
        env={"TMPDIR": str(scratch)},
    )  # fmt: skip
    rows = results(run)
    assert set(rows) == {
        "atomic/sqlite/2", "atomic/redis/2", "locked/sqlite/2", "locked/redis/2",
    }  # fmt: skip
    for store in ("sqlite", "redis"):
        atomic, locked = rows[f"atomic/{store}/2"], rows[f"locked/{store}/2"]
        assert (atomic["answers"], atomic["distinct"], atomic["lost"]) == (60, 60, 0)
        assert locked["answers"] == 60
        assert locked["lost"] == 0
        assert locked["repeated"] == 60 - locked["distinct"]
    # Every server it started (hypercorn parent and workers, redis-server)
    # lived under the scratch folder, and none is left.
    if sys.platform == "linux":
        assert _processes_mentioning(str(scratch)) == []
    assert list(scratch.iterdir()) == []
