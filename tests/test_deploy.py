"""The README's serve command, ``qapp serve``: real hypercorn workers on the SQLite default."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from qapp.testing import HypercornServer

pytestmark = pytest.mark.slow


def test_four_workers_serve_health_on_sqlite_default(tmp_path: Path) -> None:
    """qapp serve with hypercorn.toml serves /health from 4 workers on the default SQLite file."""
    env = {"QAPP_INSTANCE_PATH": str(tmp_path / "instance"), "QAPP_STORE_URL": ""}
    with HypercornServer(workers=4, env=env, supervised=True) as server:
        pids = set()
        for _ in range(200):
            with urllib.request.urlopen(f"{server.url}/health", timeout=5) as response:
                body = json.load(response)
            assert body["status"] == "ok"
            assert body["store"] == "sqlite"
            pids.add(body["worker"])
            if len(pids) == 4:
                break
    assert len(pids) == 4
    # Every worker used the one default file and agreed on one generated key.
    assert (tmp_path / "instance" / "qapp.db").exists()
    assert len((tmp_path / "instance" / "secret_key").read_text().split()) == 1
