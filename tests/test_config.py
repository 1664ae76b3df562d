"""Configuration: environment, overrides, the instance folder and the secret key."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest

from qapp import create_app
from qapp.ext import secret
from qapp.ext.settings import EXTENSION_SETTINGS
from qapp.service.config import SERVICE_SETTINGS


def test_defaults_to_sqlite_in_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing configured, every store is one SQLite file in the instance folder."""
    for key in (*EXTENSION_SETTINGS, *SERVICE_SETTINGS):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    app = create_app()
    expected = f"sqlite://{tmp_path / 'instance' / 'qapp.db'}"
    urls = app.extensions["qapp"].settings.urls
    assert urls == {"default": expected, "session": expected, "cache": expected}
    assert app.instance_path == str(tmp_path / "instance")


def test_environment_then_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """QAPP_* variables set the config, and a mapping passed to create_app wins over them."""
    monkeypatch.setenv("QAPP_STORE_URL", "memory://")
    monkeypatch.setenv("QAPP_CACHE_STORE_URL", f"sqlite://{tmp_path / 'cache.db'}")
    monkeypatch.setenv("QAPP_SECRET_KEY", "from-env-" + "e" * 32)
    app = create_app({"INSTANCE_PATH": str(tmp_path), "SECRET_KEY": "from-mapping-" + "m" * 32})
    urls = app.extensions["qapp"].settings.urls
    assert urls["default"] == urls["session"] == "memory://"
    assert urls["cache"] == f"sqlite://{tmp_path / 'cache.db'}"
    assert app.config["SECRET_KEY"] == "from-mapping-" + "m" * 32


def test_roles_sharing_a_url_share_a_store(tmp_path: Path) -> None:
    """Roles configured with one URL get one store object (one pool), not three."""
    app = create_app({"STORE_URL": "memory://", "INSTANCE_PATH": str(tmp_path)})
    stores = app.extensions["qapp"].stores
    assert stores["default"] is stores["session"] is stores["cache"]


def test_secret_key_generated_once_owner_only(tmp_path: Path) -> None:
    """A generated secret key is kept owner-only and reused by the next app."""
    first = create_app({"STORE_URL": "memory://", "INSTANCE_PATH": str(tmp_path)})
    second = create_app({"STORE_URL": "memory://", "INSTANCE_PATH": str(tmp_path)})
    key_file = tmp_path / secret.SECRET_FILE
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert len(first.config["SECRET_KEY"]) >= 43  # 32 random bytes
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [secret.SECRET_FILE]


def _key_in_child(path: str, start: object, results: object) -> None:
    assert hasattr(start, "wait")
    assert hasattr(results, "put")
    start.wait()
    results.put(secret.load_or_create_secret(Path(path)))


def test_secret_key_race_free_across_processes(tmp_path: Path) -> None:
    """8 processes creating the key at the same moment all end up with one key."""
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    path = str(tmp_path / secret.SECRET_FILE)
    children = [ctx.Process(target=_key_in_child, args=(path, start, results)) for _ in range(8)]
    for child in children:
        child.start()
    start.set()
    keys = {results.get(timeout=30) for _ in children}
    for child in children:
        child.join(30)
    assert len(keys) == 1
    assert keys == {Path(path).read_text().strip()}
