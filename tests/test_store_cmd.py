"""``qapp store``: an operator's get, set, delete, ttl and keys, run as the real command.

Each test runs ``qapp store …`` in a child process against a real SQLite file
or a real redis-server, and reads what it printed and its exit status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qapp.state import open_store
from qapp.testing import free_port
from tests.oneline import one_line


def qapp_store(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``qapp store ARGS``; the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "qapp.tools.cli", "store", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        check=False,
    )


@pytest.fixture
async def sqlite_file(tmp_path: Path) -> str:
    """The URL of a SQLite store file that exists, as a running app's does."""
    url = f"sqlite://{tmp_path / 'qapp.db'}"
    async with await open_store(url) as store:
        await store.ping()
    return url


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest) -> str:
    """A real SQLite file's store URL, then a real redis-server's."""
    fixture = "sqlite_file" if request.param == "sqlite" else "redis_url"
    value: str = request.getfixturevalue(fixture)
    return value


def test_set_then_get_ttl_keys_delete(url: str) -> None:
    """What set stores, get prints as JSON, ttl and keys report, and delete removes."""
    stored = qapp_store("set", url, "user:1", '{"name": "Zoë", "n": [1, 2]}', "--ttl", "600")
    assert (stored.returncode, stored.stdout, stored.stderr) == (0, "", "")
    assert qapp_store("set", url, "user:2", "null").returncode == 0
    assert qapp_store("set", url, "other", '"text"').returncode == 0
    got = qapp_store("get", url, "user:1")
    assert (got.returncode, got.stdout) == (0, '{"name": "Zoë", "n": [1, 2]}\n')
    assert qapp_store("get", url, "user:2").stdout == "null\n"
    assert 500 < float(qapp_store("ttl", url, "user:1").stdout) <= 600
    assert qapp_store("ttl", url, "user:2").stdout == "never\n"
    assert sorted(qapp_store("keys", url, "user:").stdout.split()) == ["user:1", "user:2"]
    assert sorted(qapp_store("keys", url).stdout.split()) == ["other", "user:1", "user:2"]
    deleted = qapp_store("delete", url, "user:1")
    assert (deleted.returncode, deleted.stdout, deleted.stderr) == (0, "", "")
    assert qapp_store("get", url, "user:1").returncode == 1


def test_keys_prints_at_most_the_limit(url: str) -> None:
    """keys --limit N prints N keys of more, and says on stderr that there are more."""
    for n in range(5):
        assert qapp_store("set", url, f"k{n}", str(n)).returncode == 0
    shown = qapp_store("keys", url, "k", "--limit", "3")
    assert shown.returncode == 0
    assert len(set(shown.stdout.split())) == 3
    assert "raise --limit" in one_line(shown.stderr)
    every = qapp_store("keys", url, "k", "--limit", "5")
    assert (sorted(every.stdout.split()), every.stderr) == ([f"k{n}" for n in range(5)], "")


@pytest.mark.parametrize("action", ["get", "ttl", "delete"])
def test_missing_key_is_one_line_and_exit_1(url: str, action: str) -> None:
    """get, ttl and delete of a key that is not there say so in one line and exit 1."""
    done = qapp_store(action, url, "absent")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "no key 'absent'" in one_line(done.stderr)


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (["set", "{url}", "k", "text"], 1, "VALUE is not JSON"),
        (["set", "{url}", "k", "NaN"], 1, "not JSON"),
        (["set", "{url}", "k", "1", "--ttl", "0"], 2, "above 0"),
        (["set", "{url}", "k", "1", "--ttl", "soon"], 2, "not a number of seconds"),
        (["keys", "{url}", "--limit", "0"], 2, "at least 1"),
        (["nosuch", "{url}", "k"], 2, "invalid choice"),
        (["get", "{url}"], 2, "required: KEY"),
    ],
)
def test_bad_input_is_one_line(url: str, args: list[str], status: int, words: str) -> None:
    """A bad value, ttl, limit or action is refused in one line with a non-zero exit, storing
    nothing."""
    done = qapp_store(*(arg.format(url=url) for arg in args))
    assert done.returncode == status
    assert words in one_line(done.stderr)
    assert qapp_store("keys", url).stdout == ""


@pytest.mark.parametrize(
    ("store_url", "words"),
    [
        ("bogus://x", "unknown store scheme"),
        ("memory://", "inside one process"),
        ("sqlite://{tmp}/nothing-here.db", "no SQLite file at"),
        ("sqlite://{tmp}/missing/x.db", "does not exist"),
        ("redis://127.0.0.1:{port}/0", "Redis"),
        ("redis://:hunter2@127.0.0.1:{port}/0", "Redis"),
        ("postgresql://qapp:hunter2@127.0.0.1:{port}/qapp", "PostgreSQL"),
    ],
)
def test_unusable_store_is_one_line(tmp_path: Path, store_url: str, words: str) -> None:
    """A bad URL, a missing SQLite file or a store that is down is one line and exit 1, which
    never shows a password, and no file is created."""
    named = store_url.format(tmp=tmp_path, port=free_port())
    done = qapp_store("get", named, "k")
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert words in line
    assert "hunter2" not in line
    assert list(tmp_path.iterdir()) == []
