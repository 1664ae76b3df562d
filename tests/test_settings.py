"""Settings: one rule (app.config, then the environment), read once, every key documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from quart import Quart

from qapp import create_app
from qapp.ext import Qapp
from qapp.ext.settings import EXTENSION_SETTINGS, setting
from qapp.service.config import ALIASES, SERVICE_SETTINGS
from qapp.state import ConfigurationError

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
#: Names in a table row of docs/settings.md: "| `QAPP_X` |".
DOCUMENTED = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", DOCS, re.M))


def _keys_in_code() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "qapp").rglob("*.py"):
        found.update(re.findall(r"\bQAPP_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    return found


def test_every_key_the_code_names_is_documented() -> None:
    """Every QAPP_* name in qapp's code has a row in docs/settings.md."""
    missing = _keys_in_code() - DOCUMENTED
    assert not missing, f"not in docs/settings.md: {sorted(missing)}"


def test_every_key_of_the_tables_is_documented() -> None:
    """The extension's and the service's key tables are in docs/settings.md, and nothing else."""
    tables = set(EXTENSION_SETTINGS) | set(SERVICE_SETTINGS)
    assert tables <= DOCUMENTED
    assert {k for k in DOCUMENTED if k.startswith("QAPP_")} - tables <= {
        "QAPP_H2C",
        "QAPP_REDIS_SERVER",
        "QAPP_REDIS_CLI",
        "QAPP_PG_BINDIR",
    }


def test_config_wins_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key in the config wins; a missing, None or empty one is read from the environment."""
    monkeypatch.setenv("QAPP_X", "from-env")
    assert setting({"QAPP_X": "from-config"}, "QAPP_X") == "from-config"
    assert setting({}, "QAPP_X") == "from-env"
    assert setting({"QAPP_X": None}, "QAPP_X") == "from-env"
    assert setting({"QAPP_X": ""}, "QAPP_X") == "from-env"
    monkeypatch.delenv("QAPP_X")
    assert setting({}, "QAPP_X") is None


def test_extension_reads_the_environment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Qapp reads its keys when installed: a later change of the environment changes nothing."""
    monkeypatch.setenv("QAPP_SESSION_TTL", "120")
    app = Quart(__name__, instance_path=str(tmp_path))
    app.config["QAPP_STORE_URL"] = "memory://"
    Qapp(app)
    monkeypatch.setenv("QAPP_SESSION_TTL", "999")
    assert app.extensions["qapp"].session_ttl == 120.0
    assert app.extensions["qapp"].settings.session_ttl == 120.0


def test_service_and_extension_share_their_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QAPP_SESSION_TTL sets the service's sessions as any app's; the old name is an alias."""
    monkeypatch.setenv("QAPP_SESSION_TTL", "300")
    app = create_app({"STORE_URL": "memory://", "INSTANCE_PATH": str(tmp_path)})
    assert app.extensions["qapp"].session_ttl == 300.0
    aliased = create_app(
        {"STORE_URL": "memory://", "INSTANCE_PATH": str(tmp_path), "SESSION_TTL": 60}
    )
    assert aliased.extensions["qapp"].session_ttl == 60.0
    assert ALIASES["SESSION_TTL"] == "QAPP_SESSION_TTL"


def test_session_cookie_secure_works_in_any_app(tmp_path: Path) -> None:
    """QAPP_SESSION_COOKIE_SECURE marks the cookie Secure in a user's app, not only the demo."""
    app = Quart(__name__, instance_path=str(tmp_path))
    app.config.update(QAPP_STORE_URL="memory://", QAPP_SESSION_COOKIE_SECURE="yes")
    Qapp(app)
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_service_keys_are_read_once_into_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's own keys land in app.config under their QAPP_ names, checked at startup."""
    monkeypatch.setenv("QAPP_MEMO_TTL", "12.5")
    monkeypatch.setenv("QAPP_CACHE_QUOTA", "off")
    app = create_app({"STORE_URL": "memory://", "INSTANCE_PATH": str(tmp_path)})
    assert app.config["QAPP_MEMO_TTL"] == 12.5
    assert app.config["QAPP_CACHE_QUOTA"] is None
    assert app.config["QAPP_LOGIN_LIMIT"] == "5/15 minutes"
    assert app.config["QAPP_FAST_PATH"] is True


@pytest.mark.parametrize(
    ("key", "value"),
    [("LOGIN_LIMIT", "lots"), ("MEMO_TTL", "soon"), ("HASH_CONCURRENCY", "0")],
)
def test_bad_service_setting_stops_startup(tmp_path: Path, key: str, value: str) -> None:
    """A service setting that cannot be read is a ConfigurationError naming the key."""
    with pytest.raises(ConfigurationError, match=f"QAPP_{key}"):
        create_app({"STORE_URL": "memory://", "INSTANCE_PATH": str(tmp_path), key: value})


def test_bad_url_writes_no_key_file(tmp_path: Path) -> None:
    """A malformed store URL fails before the secret key file is written."""
    with pytest.raises(ConfigurationError):
        create_app({"STORE_URL": "nosuch://x", "INSTANCE_PATH": str(tmp_path / "inst")})
    assert not (tmp_path / "inst" / "secret_key").exists()


def test_fast_path_is_off_in_a_users_app(tmp_path: Path) -> None:
    """Qapp(app) leaves Quart's own request handling in place unless QAPP_FAST_PATH is on."""
    app = Quart(__name__, instance_path=str(tmp_path))
    before = app.asgi_http_class
    app.config["QAPP_STORE_URL"] = "memory://"
    Qapp(app)
    assert app.asgi_http_class is before
