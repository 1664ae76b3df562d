"""The qapp command: "qapp serve" runs an app, "qapp race" races the service's counters.

A mistake a newcomer can make (a busy port, a bad store URL, an app that
does not import, a feature whose extra is not installed) ends the command
with one line that names it and exit status 1, found in the parent before
any worker starts, never a page of tracebacks from every worker.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from qapp.state import ConfigurationError
from qapp.store import extras
from qapp.tools import store_cmd


class CommandError(Exception):
    """A mistake the command reports in one line, exiting 1."""


def _check_app(path: str) -> Any:
    """Import the app in the parent, so that a bad one fails once, here, before any worker.

    Returns the app.
    """
    from qapp.state import QappError

    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except extras.MissingExtra as exc:
        raise CommandError(str(exc)) from None
    except QappError as exc:
        raise CommandError(f"configuration: {exc}") from None
    except ImportError as exc:
        raise CommandError(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:
        raise CommandError(f"{module_name!r} failed to load: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, attribute or "app"):
        raise CommandError(f"{module_name!r} has no {attribute or 'app'!r}: use --app module:name")
    return getattr(module, attribute or "app")


def _metrics_directory(app: Any) -> Path | None:
    """Give the workers one directory for their counts if the app serves ``/metrics``.

    prometheus-client's multiprocess mode: each worker writes its counts to
    files there, and a scrape of any worker sums them all. The directory is
    set in the environment, which spawned workers inherit, before any starts.
    Returns the directory made here, for the caller to remove at the end; a
    directory the caller named (``PROMETHEUS_MULTIPROC_DIR``) is only emptied
    of the last run's files, as prometheus-client asks.
    """
    from qapp.ext.settings import as_bool, setting
    from qapp.store import metrics

    config = getattr(app, "config", None)
    if not as_bool(setting(config if isinstance(config, Mapping) else {}, metrics.ENV)):
        return None
    named = os.environ.get(metrics.MULTIPROC_ENV)
    if named:
        for stale in Path(named).glob("*.db"):
            stale.unlink()
        return None
    made = Path(tempfile.mkdtemp(prefix="qapp-metrics-"))
    os.environ[metrics.MULTIPROC_ENV] = str(made)
    return made


def serve(args: argparse.Namespace) -> int:
    """Serve an app under hypercorn (or granian): the package's defaults, or the file named.

    Unlike ``hypercorn -c …``, a worker that dies is replaced while the
    others keep serving (see :mod:`qapp.server.supervisor`, and
    :mod:`qapp.server.granian` for ``--server granian``).
    """
    from qapp.server import defaults
    from qapp.server.checks import ServeConfigError, check_serving
    from qapp.server.listeners import AddressInUse, CannotBind, refuse_busy
    from qapp.server.supervisor import serve as supervise
    from qapp.server.worker import H2C_VARIABLE

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] %(message)s")
    config = defaults.load(args.config)
    config.application_path = args.app
    if args.bind:
        config.bind = [args.bind]
    if args.workers is not None:
        config.workers = args.workers
    if args.keep_alive is not None:
        config.keep_alive_timeout = args.keep_alive
    try:
        check_serving(config, source="--bind" if args.bind else f"bind in {args.config}:")
    except ServeConfigError as exc:
        raise CommandError(str(exc)) from None
    if args.h2c:
        os.environ[H2C_VARIABLE] = "1"
    # As `python -m` and hypercorn do: an app module in the current folder
    # imports. The workers, spawned, start with this process's sys.path.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if args.server == "granian":
        from qapp.server import granian

        try:
            granian.settings(config, h2c=args.h2c)
        except granian.GranianConfigError as exc:
            raise CommandError(str(exc)) from None
    counts: Path | None = None
    try:
        refuse_busy(config)  # first: a refused start leaves nothing behind
        counts = _metrics_directory(_check_app(args.app))
        if args.server == "granian":
            return granian.serve(config, h2c=args.h2c)
        return supervise(config)
    except AddressInUse as exc:
        raise CommandError(f"{exc.strerror}; stop it or choose another --bind") from None
    except CannotBind as exc:
        raise CommandError(str(exc.strerror)) from None
    finally:
        if counts is not None:
            shutil.rmtree(counts, ignore_errors=True)


def vacuum(args: argparse.Namespace) -> int:
    """Give a SQLite store's free space back to the file system."""
    from qapp.state import QappError, store_from_url
    from qapp.store.backends.sqlite import SQLiteStore

    try:
        store = store_from_url(args.url)
    except QappError as exc:
        raise CommandError(str(exc)) from None
    if not isinstance(store, SQLiteStore):
        raise CommandError("vacuum is for sqlite:// stores; Redis gives memory back itself")
    if not store.path.is_file():
        # Opening would create an empty database where the user meant an existing one.
        raise CommandError(f"no SQLite file at {store.path}")

    async def run() -> int:
        async with store:
            return await store.vacuum()

    try:
        freed = asyncio.run(run())
    except QappError as exc:
        raise CommandError(str(exc)) from None
    print(f"{store.path}: {freed:,} bytes freed")
    return 0


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line: what is wrong, and where help is."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` in one line and exit 2, as argparse does, without the usage block."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1 worker, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"seconds must be 0 or more, not {text!r}")
    return value


def _config_file(text: str) -> Path:
    # A config named on the command line must exist; only the default may be absent.
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per task."""
    parser = Parser(
        prog="qapp",
        description='"qapp serve" runs an app under hypercorn workers; '
        '"qapp race" races the service\'s counters and counts what went wrong.',
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    p_serve = commands.add_parser(
        "serve", help="serve an app (qapp's service by default) with hypercorn workers"
    )
    p_serve.add_argument(
        "--config",
        type=_config_file,
        help="a hypercorn TOML file over the package's defaults (4 workers on 127.0.0.1:8000)",
    )
    p_serve.add_argument(
        "--app", default="qapp.asgi:app", help="the ASGI app, module:name (default: %(default)s)"
    )
    p_serve.add_argument("--bind", help="host:port (default from the config)")
    p_serve.add_argument(
        "--workers", type=_workers, help="worker processes, 1 or more (default from the config)"
    )
    p_serve.add_argument(
        "--keep-alive",
        type=_seconds,
        help="seconds an idle connection stays open (default from the config)",
    )
    p_serve.add_argument(
        "--h2c",
        action="store_true",
        help="accept cleartext HTTP/2 (off by default: serve HTTP/2 through a TLS proxy)",
    )
    p_serve.add_argument(
        "--server",
        choices=("hypercorn", "granian"),
        default="hypercorn",
        help="the HTTP server: hypercorn (default) or granian, the faster Rust one "
        "(qapp[fast]; one TCP bind, no TLS)",
    )
    p_serve.set_defaults(func=serve)

    p_vacuum = commands.add_parser(
        "vacuum", help="shrink a SQLite store's file (expired rows deleted, space returned)"
    )
    p_vacuum.add_argument("url", help="the store, sqlite:///path/to/qapp.db")
    p_vacuum.set_defaults(func=vacuum)

    _add_race(commands)
    store_cmd.add_parser(commands)
    return parser


def version() -> str:
    """qapp's version, as installed."""
    try:
        return importlib.metadata.version("qapp")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _add_race(commands: Any) -> None:
    """Add ``qapp race``, or without the ``lab`` extra a stand-in that says how to get it."""
    if extras.installed("lab"):
        from qapp.tools import race_cmd

        race_cmd.add_parser(commands)
        return
    # No option parsing of its own (no prefix characters): whatever follows
    # ``race``, --help included, gets the one line.
    stand_in = commands.add_parser(
        "race",
        help="race the service's counters (needs qapp[lab])",
        add_help=False,
        prefix_chars="\0",
    )
    stand_in.add_argument("ignored", nargs="*")
    stand_in.set_defaults(func=_race_needs_lab)


def _race_needs_lab(args: argparse.Namespace) -> int:
    raise extras.MissingExtra("the race lab", "lab")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qapp`` console script."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except (CommandError, ConfigurationError) as exc:
        print(f"qapp {args.command}: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
