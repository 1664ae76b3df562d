"""The ``qapp`` command: ``qapp serve`` runs the service, ``qapp race`` races its counters."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from qapp.testing.servers import REPO_CONFIG
from qapp.tools import race_cmd


def serve(args: argparse.Namespace) -> int:
    """Serve qapp under hypercorn, from a hypercorn TOML file if there is one.

    Unlike ``hypercorn -c …``, a worker that dies is replaced while the
    others keep serving (see :mod:`qapp.server.supervisor`).
    """
    from hypercorn.config import Config

    from qapp.server.supervisor import serve as supervise

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] %(message)s")
    config = Config.from_toml(args.config) if args.config.exists() else Config()
    config.application_path = args.app
    if args.bind:
        config.bind = [args.bind]
    if args.workers:
        config.workers = args.workers
    if args.keep_alive is not None:
        config.keep_alive_timeout = args.keep_alive
    return supervise(config)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per task."""
    parser = argparse.ArgumentParser(prog="qapp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p_serve = commands.add_parser("serve", help="serve qapp with hypercorn")
    default_config = REPO_CONFIG if REPO_CONFIG.exists() else Path("hypercorn.toml")
    p_serve.add_argument("--config", type=Path, default=default_config, help="hypercorn TOML")
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
    p_serve.set_defaults(func=serve)

    race_cmd.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qapp`` console script."""
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
