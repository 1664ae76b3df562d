"""First contact: a newcomer's mistake gets one clear line and exit status 1.

Each runs the real ``qapp`` command in a child process, as a newcomer would,
and reads what it printed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from qapp.testing import HypercornServer, free_port

pytestmark = pytest.mark.slow


def qapp(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``qapp ARGS``; the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "qapp.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
    )


def one_line(stderr: str) -> str:
    """The only line a failed command printed; fails if there was more, or a traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("server_kind", ["hypercorn", "granian"])
def test_busy_port_is_refused_and_the_first_server_is_untouched(
    tmp_path: Path, server_kind: str
) -> None:
    """A second qapp serve on a busy port exits non-zero within 5 s; the first keeps its numbers."""
    env = {
        "QAPP_STORE_URL": f"sqlite://{tmp_path / 'first.db'}",
        "QAPP_INSTANCE_PATH": str(tmp_path),
    }
    with HypercornServer(workers=2, env=env, server=server_kind) as first:

        def atomic() -> int:
            request = urllib.request.Request(f"{first.url}/counter/atomic", method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                value: int = json.load(response)["value"]
                return value

        assert atomic() == 1
        other = tmp_path / "other"
        started = time.monotonic()
        second = qapp(
            "serve",
            "--server",
            server_kind,
            "--bind",
            f"127.0.0.1:{first.port}",
            env={
                "QAPP_STORE_URL": f"sqlite://{other / 'second.db'}",
                "QAPP_INSTANCE_PATH": str(other),
            },
        )
        assert time.monotonic() - started < 5
        assert second.returncode != 0
        line = one_line(second.stderr)
        assert f"127.0.0.1:{first.port}" in line
        assert "in use" in line
        # Every worker of the first server still counts on: nothing took connections away.
        assert [atomic() for _ in range(20)] == list(range(2, 22))


@pytest.mark.parametrize("server_kind", ["hypercorn", "granian"])
def test_bad_store_url_is_one_line_and_exit_1(tmp_path: Path, server_kind: str) -> None:
    """QAPP_STORE_URL=bogus://x: exit 1, one line naming the URL, no traceback, no worker."""
    done = qapp(
        "serve",
        "--server",
        server_kind,
        "--bind",
        f"127.0.0.1:{free_port()}",
        env={"QAPP_STORE_URL": "bogus://x", "QAPP_INSTANCE_PATH": str(tmp_path)},
    )
    assert done.returncode == 1
    assert "bogus://x" in one_line(done.stderr)
    assert "replacement" not in done.stderr + done.stdout


def test_app_that_does_not_import_is_one_line(tmp_path: Path) -> None:
    """--app naming a module that does not exist, or a name it lacks: one line, exit 1."""
    (tmp_path / "broken.py").write_text("app = 1\n")
    for target, words in (("nosuch:app", "cannot import"), ("broken:other", "has no")):
        done = qapp("serve", "--bind", f"127.0.0.1:{free_port()}", "--app", target, cwd=tmp_path)
        assert done.returncode == 1
        assert words in one_line(done.stderr)


def test_short_secret_key_is_refused(tmp_path: Path) -> None:
    """A secret key under 32 bytes stops the server at startup with a clear line."""
    done = qapp(
        "serve",
        "--bind",
        f"127.0.0.1:{free_port()}",
        env={
            "QAPP_SECRET_KEY": "short",
            "QAPP_INSTANCE_PATH": str(tmp_path),
            "QAPP_STORE_URL": "memory://",
        },
    )
    assert done.returncode == 1
    assert "at least 32" in one_line(done.stderr)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A generated key file that others can read is refused, naming the fix."""
    key = tmp_path / "secret_key"
    key.write_text("k" * 43 + "\n")
    key.chmod(0o644)
    done = qapp(
        "serve",
        "--bind",
        f"127.0.0.1:{free_port()}",
        env={
            "QAPP_INSTANCE_PATH": str(tmp_path),
            "QAPP_STORE_URL": "memory://",
            "QAPP_SECRET_KEY": "",
        },
    )
    assert done.returncode == 1
    assert "chmod 600" in one_line(done.stderr)


def test_help_is_plain_text() -> None:
    """qapp --help and qapp race --help print no reStructuredText marks."""
    for args in (["--help"], ["race", "--help"], ["serve", "--help"]):
        done = qapp(*args)
        assert done.returncode == 0
        assert "``" not in done.stdout
        assert "::" not in done.stdout


def test_vacuum_gives_space_back(tmp_path: Path) -> None:
    """qapp vacuum shrinks a SQLite store whose rows were deleted, and says by how much."""
    path = tmp_path / "big.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE qapp_kv (key TEXT PRIMARY KEY, value TEXT, expires_at REAL)")
        conn.executemany(
            "INSERT INTO qapp_kv VALUES (?, ?, ?)",
            [(f"k{n}", "x" * 2000, 1.0) for n in range(2000)],  # all long expired
        )
    conn.close()
    before = path.stat().st_size
    done = qapp("vacuum", f"sqlite://{path}")
    assert done.returncode == 0, done.stderr
    assert "bytes freed" in done.stdout
    assert path.stat().st_size < before / 4
    wrong = qapp("vacuum", "memory://")
    assert wrong.returncode == 1
    assert "sqlite" in one_line(wrong.stderr)
