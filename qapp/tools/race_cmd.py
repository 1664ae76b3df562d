"""``qapp race``: the command's arguments, its table and its exit status.

What it fires and how it counts is :mod:`qapp.tools.race`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qapp.service.counters import STRATEGIES
from qapp.testing import ServerError
from qapp.tools import race as lab
from qapp.tools.race import SPAWN_STORES, Outcome, RaceError

# --- output --------------------------------------------------------------------


def _count(n: int) -> str:
    return f"[green]{n}[/]" if n == 0 else f"[red]{n}[/]"


def render(outcomes: Sequence[Outcome], requests: int, concurrency: int) -> Table:
    """The outcomes as one table, a row per strategy × store × workers."""
    table = Table(
        title=f"qapp race: {requests} requests per row, {concurrency} at a time, "
        "a fresh connection each"
    )
    for name in ("strategy", "store", "workers", "answers", "distinct"):
        table.add_column(name, justify="left" if name in ("strategy", "store") else "right")
    for name in ("lost", "repeated", "workers seen", "req/s"):
        table.add_column(name, justify="right")
    order = {name: i for i, name in enumerate(STRATEGIES)}
    # Stable: within a strategy, rows keep the order the servers ran in.
    rows = sorted(outcomes, key=lambda o: order[o.strategy])
    for o in rows:
        answers = str(o.answers) if not o.errors else f"{o.answers} [red]({o.errors} failed)[/]"
        table.add_row(
            o.strategy,
            o.store,
            "–" if o.workers is None else str(o.workers),
            answers,
            str(o.distinct),
            _count(o.lost),
            _count(o.repeated),
            str(o.workers_seen),
            f"{o.requests_per_second:,.0f}",
        )
    return table


# --- the command -----------------------------------------------------------------


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown strategy {', '.join(unknown) or text!r}; valid: {', '.join(STRATEGIES)}"
        )
    return names


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of worker counts: {text!r}") from None
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError("worker counts must be at least 1")
    return counts


def _stores(text: str) -> list[str]:
    stores = [part.strip() for part in text.split(",")]
    bad = [s for s in stores if s not in SPAWN_STORES]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown store {', '.join(bad)}; valid: {', '.join(SPAWN_STORES)}"
        )
    return stores


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_parser(commands: Any) -> None:
    """Add race to the qapp command's sub-commands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "race",
        help="fire concurrent increments at each counter strategy and count lost updates",
        description=lab.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--url", default="http://127.0.0.1:8000", help="a running qapp (default: %(default)s)"
    )
    target.add_argument(
        "--spawn",
        action="store_true",
        help="start hypercorn servers of its own for each --workers × --store, then stop them",
    )
    parser.add_argument(
        "--strategy",
        type=_names,
        default=list(STRATEGIES),
        help="comma-separated strategies (default: all five)",
    )
    parser.add_argument(
        "--requests", type=_positive, default=300, help="increments per strategy (default: 300)"
    )
    parser.add_argument(
        "--concurrency", type=_positive, default=100, help="requests in flight (default: 100)"
    )
    parser.add_argument(
        "--workers",
        type=_worker_counts,
        default=[1, 4],
        help="with --spawn: worker counts to start (default: 1,4)",
    )
    parser.add_argument(
        "--store",
        type=_stores,
        default=["sqlite", "redis"],
        help=f"with --spawn: stores, of {', '.join(SPAWN_STORES)} (default: sqlite,redis)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=race)


@contextlib.contextmanager
def _progress(console: Console, enabled: bool) -> Iterator[Progress]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
    with progress:
        yield progress


def race(args: argparse.Namespace) -> int:
    """Run the race and print what it showed; 1 with a message if it cannot run."""
    out = Console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        # Piped to a file or pasted into a README: keep every column whole.
        out = Console(width=120)
    err = Console(stderr=True)
    try:
        with _progress(err, enabled=not args.json) as progress:
            if args.spawn:
                outcomes = lab.spawn_matrix(
                    args.workers,
                    args.store,
                    args.strategy,
                    args.requests,
                    args.concurrency,
                    progress,
                )
            else:
                url = args.url.rstrip("/")
                outcomes = asyncio.run(
                    lab.race_server(url, args.strategy, args.requests, args.concurrency, progress)
                )
    except (RaceError, ServerError) as exc:
        err.print(f"[bold red]qapp race:[/] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        err.print("qapp race: interrupted; every server it started is stopped")
        return 130
    if args.json:
        report = {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "results": [o.as_dict() for o in outcomes],
        }
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        out.print(render(outcomes, args.requests, args.concurrency))
    return 0
