"""First contact: a newcomer's mistake gets one clear line and a non-zero exit.

Each runs the real ``qapp`` command in a child process, as a newcomer would,
and reads what it printed: exit 2 for an argument the parser refuses, 1 for
a mistake found once the command runs (a busy port, a bad store URL).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from qapp import create_app
from qapp.state import ConfigurationError, store_from_url
from qapp.testing import HypercornServer, free_port
from tests.oneline import one_line

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


@pytest.mark.parametrize("server_kind", ["hypercorn", "granian"])
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--bind", "127.0.0.1:99999"], "from 1 to 65535"),
        (["--bind", "127.0.0.1:abc"], "from 1 to 65535"),
        (["--bind", "8011"], "use 127.0.0.1:8011"),
        (["--bind", "127.0.0.1"], "has no port: use 127.0.0.1:PORT"),
        (["--bind", "::1:8000"], "[::1]:8000"),
        (["--bind", "http://127.0.0.1:8000"], "HOST:PORT"),
        (["--bind", "nosuchhost.invalid:8011"], "cannot resolve host 'nosuchhost.invalid'"),
        (["--workers", "0"], "at least 1"),
        (["--workers", "-1"], "at least 1"),
        (["--workers", "four"], "not a whole number"),
        (["--keep-alive", "nan"], "seconds"),
        (["--config", "/nonexistent.toml"], "no such file"),
    ],
)
def test_bad_serve_argument_is_one_line(
    tmp_path: Path, server_kind: str, args: list[str], words: str
) -> None:
    """Each malformed qapp serve argument: one line saying what is wrong, non-zero, no worker."""
    done = qapp(
        "serve",
        "--server",
        server_kind,
        *args,
        env={"QAPP_STORE_URL": "memory://", "QAPP_INSTANCE_PATH": str(tmp_path / "instance")},
    )
    assert done.returncode in (1, 2)
    line = one_line(done.stderr)
    assert line.startswith("qapp serve: ")
    assert words in line
    assert "already in use" not in line
    assert not (tmp_path / "instance").exists()


def test_ipv6_bind_in_brackets_serves(tmp_path: Path) -> None:
    """--bind [::1]:PORT is accepted, and the server answers there."""
    env = {"QAPP_STORE_URL": "memory://", "QAPP_INSTANCE_PATH": str(tmp_path)}
    with (
        HypercornServer(workers=1, env=env, host="[::1]") as server,
        urllib.request.urlopen(f"{server.url}/health", timeout=5) as response,
    ):
        assert response.status == 200


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:{port}/abc",
        "redis://127.0.0.1:{port}/-1",
        "redis://127.0.0.1:0/0",
        "redis://127.0.0.1:99999/0",
        "postgresql://127.0.0.1:0/qapp",
        "postgresql://127.0.0.1:99999/qapp",
        "sqlite://{tmp}/missing/deeper/qapp.db",
    ],
)
def test_bad_store_url_is_refused_before_connecting(tmp_path: Path, url: str) -> None:
    """store_from_url refuses a bad port, database or SQLite folder, and creates nothing."""
    url = url.format(port=free_port(), tmp=tmp_path)
    with pytest.raises(ConfigurationError):
        store_from_url(url)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://127.0.0.1:{port}/abc", "'abc' is not a number"),
        ("postgresql://127.0.0.1:0/qapp", "port 0"),
        ("sqlite://{tmp}/missing/deeper/qapp.db", "{tmp}/missing/deeper' of"),
    ],
)
def test_bad_store_url_under_qapp_serve_is_one_line(tmp_path: Path, url: str, words: str) -> None:
    """qapp serve with a bad store URL: one line naming what is wrong, exit 1, no folder made."""
    instance = tmp_path / "instance"
    done = qapp(
        "serve",
        "--bind",
        f"127.0.0.1:{free_port()}",
        env={
            "QAPP_STORE_URL": url.format(port=free_port(), tmp=tmp_path),
            "QAPP_INSTANCE_PATH": str(instance),
        },
    )
    assert done.returncode == 1
    assert words.format(tmp=tmp_path) in one_line(done.stderr)
    assert not (tmp_path / "missing").exists()
    assert not instance.exists()


def test_sqlite_file_in_the_instance_folder_gets_the_folder(tmp_path: Path) -> None:
    """An explicit SQLite URL in a not-yet-made instance folder: the app makes it, owner-only."""
    instance = tmp_path / "instance"
    app = create_app(
        {
            "STORE_URL": f"sqlite://{instance / 'qapp.db'}",
            "INSTANCE_PATH": str(instance),
            "SECRET_KEY": "k" * 43,
        }
    )
    assert app.extensions["qapp"].settings.urls["default"] == f"sqlite://{instance / 'qapp.db'}"
    assert stat.S_IMODE(instance.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["vacuum", "sqlite://{tmp}/nothing-here.db"], "no SQLite file at"),
        (["vacuum", "sqlite://{tmp}/missing/x.db"], "does not exist"),
        (["race", "--url", "http://127.0.0.1:99999"], "bad port"),
        (["race", "--url", "127.0.0.1:8000"], "not an http:// URL"),
        (["race", "--requests", "0"], "at least 1"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_other_commands_refuse_in_one_line(tmp_path: Path, args: list[str], words: str) -> None:
    """qapp vacuum and qapp race refuse a bad argument in one line, non-zero, creating nothing."""
    done = qapp(*(arg.format(tmp=tmp_path) for arg in args))
    assert done.returncode in (1, 2)
    assert words in one_line(done.stderr)
    assert list(tmp_path.iterdir()) == []
