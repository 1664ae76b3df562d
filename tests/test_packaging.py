"""Packaging: a light core, one line naming a missing extra, the serving defaults in the package.

The wheel itself, installed alone in a fresh virtualenv, is checked by
``.ci/wheel-smoke``. Here the same promises are checked against the code:
a missing package is made unimportable in a child interpreter the way
Python itself allows (``sys.modules[name] = None``: its import raises
``ModuleNotFoundError``), and the real ``qapp`` command runs there.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from qapp.server import defaults
from qapp.state import ConfigurationError
from qapp.store.extras import EXTRAS, MissingExtra, extra_of, installed, require
from qapp.testing import free_port
from tests.oneline import one_line

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: Runs ``qapp ARGV`` with the packages named in argv[1] unimportable.
WITHOUT = """
import sys
for name in filter(None, sys.argv[1].split(",")):
    sys.modules[name] = None
from qapp.tools.cli import main
sys.exit(main(sys.argv[2:]))
"""

#: A user's app on the core alone: Quart and qapp's extension.
USER_APP = """
from quart import Quart
from qapp import Qapp

app = Quart(__name__)
qapp = Qapp(app)
"""

#: /metrics asked for.
METRICS_ON = {"QAPP_METRICS": "1"}

#: Every module an extra installs (uvloop too, which granian can do without).
EXTRA_MODULES = sorted({m for modules in EXTRAS.values() for m in modules} | {"uvloop"})


def run_without(
    blocked: list[str], *argv: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``qapp ARGV`` in a child interpreter in which ``blocked`` cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, ",".join(blocked), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        check=False,
    )


# --- the serving defaults ---------------------------------------------------------


def test_repository_config_says_what_the_package_defaults_say() -> None:
    """hypercorn.toml, the deployment config to copy, holds exactly the package's defaults."""
    with (ROOT / "hypercorn.toml").open("rb") as file:
        assert tomllib.load(file) == dict(defaults.SETTINGS)


def test_without_a_file_the_config_is_the_package_defaults() -> None:
    """load() with no file gives every default, and changing the result leaves them unchanged."""
    config = defaults.load()
    for key, value in defaults.SETTINGS.items():
        assert getattr(config, key) == value, key
    config.bind.append("127.0.0.1:9")
    assert defaults.load().bind == ["127.0.0.1:8000"]


def test_a_named_file_goes_over_the_defaults(tmp_path: Path) -> None:
    """A named TOML file sets what it names; every other setting keeps the package default."""
    named = tmp_path / "serve.toml"
    named.write_text('workers = 2\nbind = ["127.0.0.1:9001"]\n')
    config = defaults.load(named)
    assert (config.workers, config.bind) == (2, ["127.0.0.1:9001"])
    assert (config.backlog, config.include_server_header) == (2048, False)


@pytest.mark.parametrize(("text", "says"), [(None, "no config file"), ("workers = [", "not TOML")])
def test_a_named_file_that_is_missing_or_not_toml_is_refused(
    tmp_path: Path, text: str | None, says: str
) -> None:
    """A config file that is named but missing or not TOML is a ConfigurationError saying which."""
    named = tmp_path / "serve.toml"
    if text is not None:
        named.write_text(text)
    with pytest.raises(ConfigurationError, match=says):
        defaults.load(named)


def test_serve_with_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    """qapp serve --config naming no file is one line that names the file, as argparse exits."""
    done = run_without([], "serve", "--config", "nope.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert one_line(done.stderr) == (
        "qapp serve: argument --config: no such file: 'nope.toml' (see qapp serve --help)"
    )


def test_version_is_the_installed_distributions(tmp_path: Path) -> None:
    """qapp --version prints the version of the installed qapp distribution."""
    done = run_without([], "--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"qapp {importlib.metadata.version('qapp')}"


# --- extras -------------------------------------------------------------------------


def test_extras_match_pyproject() -> None:
    """Every extra qapp checks for is one pyproject.toml declares, and 'all' brings each of them."""
    declared = PYPROJECT["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(declared)
    assert declared["all"] == [f"qapp[{','.join(EXTRAS)}]"]
    assert len(PYPROJECT["project"]["dependencies"]) == 3


def test_missing_extra_is_one_line_naming_the_extra() -> None:
    """MissingExtra says what needs which extra, and the pip command that installs it."""
    assert str(MissingExtra("the redis:// store", "redis")) == (
        "the redis:// store needs the 'redis' extra: pip install 'qapp[redis]'"
    )
    assert isinstance(MissingExtra("x", "lab"), ConfigurationError)
    assert extra_of("redis.asyncio.sentinel") == "redis"
    assert extra_of("asyncpg") == "postgres"
    assert extra_of("pydantic_core") is None
    assert installed("redis")
    assert installed("lab", "httpx")
    require("service", "the demo service")


@pytest.mark.parametrize(
    ("url", "blocked", "extra"),
    [
        ("redis://127.0.0.1:1/0", "redis", "redis"),
        ("redis+sentinel://127.0.0.1:1/qapp", "redis", "redis"),
        ("redis+cluster://127.0.0.1:1", "redis", "redis"),
        ("postgresql://127.0.0.1:1/qapp", "asyncpg", "postgres"),
    ],
)
def test_store_without_its_driver_is_one_line(
    tmp_path: Path, url: str, blocked: str, extra: str
) -> None:
    """qapp serve on a store whose driver is not installed: exit 1, one line naming the extra."""
    (tmp_path / "userapp.py").write_text(USER_APP)
    done = run_without(
        [blocked],
        "serve",
        "--app",
        "userapp:app",
        "--bind",
        f"127.0.0.1:{free_port()}",
        cwd=tmp_path,
        env={"QAPP_STORE_URL": url, "QAPP_INSTANCE_PATH": str(tmp_path / "instance")},
    )
    scheme = url.partition("://")[0]
    assert done.returncode == 1
    assert one_line(done.stderr) == (
        f"qapp serve: the {scheme}:// store needs the {extra!r} extra: pip install 'qapp[{extra}]'"
    )


@pytest.mark.parametrize(
    ("blocked", "argv", "env", "extra"),
    [
        (["pydantic"], ["serve"], {}, "service"),
        (["httpx"], ["race", "--spawn", "--store", "sqlite"], {}, "lab"),
        (["rich"], ["race", "--help"], {}, "lab"),
        (["granian"], ["serve", "--app", "userapp:app", "--server", "granian"], {}, "fast"),
        (
            ["prometheus_client"],
            ["serve", "--app", "userapp:app"],
            {"QAPP_METRICS": "1"},
            "metrics",
        ),
    ],
)
def test_feature_without_its_extra_is_one_line(
    tmp_path: Path, blocked: list[str], argv: list[str], env: dict[str, str], extra: str
) -> None:
    """The demo, qapp race, granian and /metrics without their extra: exit 1, one line naming it."""
    (tmp_path / "userapp.py").write_text(USER_APP)
    instance = {"QAPP_INSTANCE_PATH": str(tmp_path / "instance")}
    bind = ["--bind", f"127.0.0.1:{free_port()}"] if argv[0] == "serve" else []
    done = run_without(blocked, *argv, *bind, cwd=tmp_path, env={**env, **instance})
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith(f"qapp {argv[0]}: ")
    assert line.endswith(f"needs the {extra!r} extra: pip install 'qapp[{extra}]'")
    # Refused before anything was made: no instance folder, no secret key.
    assert not (tmp_path / "instance").exists()


def test_the_core_alone_serves_the_library(tmp_path: Path) -> None:
    """With no extra importable, qapp, qapp.state, Qapp and qapp.testing import and stores work."""
    script = f"""
import asyncio, sys
for name in {EXTRA_MODULES!r}:
    sys.modules[name] = None
import qapp, qapp.state
from quart import Quart
from qapp import Qapp
from qapp.store.extras import MissingExtra
from qapp.state import open_store
from qapp.testing import HypercornServer, race

Qapp(Quart("userapp"), stores={{"default": "memory://"}}, sessions=False)

async def count(url):
    async with await open_store(url) as store:
        return [await store.incr("n") for _ in range(3)]

assert asyncio.run(count("memory://")) == [1, 2, 3]
assert asyncio.run(count("sqlite://{tmp_path / "q.db"}")) == [1, 2, 3]
try:
    race("http://127.0.0.1:9/")
except MissingExtra as exc:
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "race() and fire() of qapp.testing needs the 'lab' extra: pip install 'qapp[lab]'"
    )


#: Where each extra's modules may be imported when a module is imported (not
#: only inside a function): the modules of that feature, which nothing in the
#: core imports. Patterns hold wherever the backends folder lives.
ALLOWED_AT_IMPORT = {
    "redis": ["qapp/*backends/redis*.py", "qapp/tools/sentinel.py"],
    "postgres": ["qapp/*backends/postgres*.py"],
    "metrics": [],
    "fast": [],
    "service": ["qapp/service/*.py"],
    "lab": ["qapp/tools/race*.py", "qapp/tools/failover.py"],
}


def _imports_at_import_time(tree: ast.Module) -> set[str]:
    """Top-level names imported when the module is: functions and TYPE_CHECKING blocks skipped."""
    names: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.ClassDef | ast.With):
                visit(node.body)

    visit(tree.body)
    return names


def test_extras_are_imported_only_by_their_own_modules() -> None:
    """No module outside an extra's own imports that extra's packages when it is imported."""
    wrong = []
    for path in sorted((ROOT / "qapp").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        for name in _imports_at_import_time(ast.parse(path.read_text())):
            extra = "fast" if name == "uvloop" else extra_of(name)
            if extra is None:
                continue
            if not any(fnmatch.fnmatch(relative, p) for p in ALLOWED_AT_IMPORT[extra]):
                wrong.append(f"{relative} imports {name} ({extra})")
    assert wrong == []
