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
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qapp import extras
from qapp.state import ConfigurationError


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
    from qapp import metrics

    config = getattr(app, "config", None)
    flag = config.get(metrics.ENV) if isinstance(config, Mapping) else None
    if not metrics.wanted(None if flag in (None, "") else flag):
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
    from qapp.server.listeners import AddressInUse, refuse_busy
    from qapp.server.supervisor import serve as supervise
    from qapp.server.worker import H2C_VARIABLE

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] %(message)s")
    config = defaults.load(args.config)
    config.application_path = args.app
    if args.bind:
        config.bind = [args.bind]
    if args.workers:
        config.workers = args.workers
    if args.keep_alive is not None:
        config.keep_alive_timeout = args.keep_alive
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
    finally:
        if counts is not None:
            shutil.rmtree(counts, ignore_errors=True)


def vacuum(args: argparse.Namespace) -> int:
    """Give a SQLite store's free space back to the file system."""
    from qapp.backends.sqlite import SQLiteStore
    from qapp.state import QappError, store_from_url

    try:
        store = store_from_url(args.url)
    except QappError as exc:
        raise CommandError(str(exc)) from None
    if not isinstance(store, SQLiteStore):
        raise CommandError("vacuum is for sqlite:// stores; Redis gives memory back itself")

    async def run() -> int:
        async with store:
            return await store.vacuum()

    try:
        freed = asyncio.run(run())
    except QappError as exc:
        raise CommandError(str(exc)) from None
    print(f"{store.path}: {freed:,} bytes freed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per task."""
    parser = argparse.ArgumentParser(
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
        type=Path,
        help="a hypercorn TOML file over the package's defaults (4 workers on 127.0.0.1:8000)",
    )
    p_serve.add_argument(
        "--app", default="qapp.asgi:app", help="the ASGI app, module:name (default: %(default)s)"
    )
    p_serve.add_argument("--bind", help="host:port (default from the config)")
    p_serve.add_argument("--workers", type=int, help="worker processes (default from the config)")
    p_serve.add_argument(
        "--keep-alive",
        type=float,
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
