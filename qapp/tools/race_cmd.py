"""``qapp race``: the command's arguments, its table and its exit status.

What it fires and how it counts is :mod:`qapp.tools.race` (the counters)
and :mod:`qapp.tools.race_lab` (the lab's rows, ``--lab``).
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
from urllib.parse import urlsplit

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qapp.service.counters import STRATEGIES
from qapp.store.extras import require
from qapp.testing import ServerError
from qapp.tools import failover, race_lab
from qapp.tools import race as lab
from qapp.tools.race import SPAWN_STORES, Outcome, RaceError
from qapp.tools.race_lab import ROWS, LabOutcome

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


def render_lab(outcomes: Sequence[LabOutcome], requests: int, concurrency: int) -> Table:
    """The lab's rows as one table: a row per row × strategy × store × workers.

    sessions count how far the counter moved and the increments lost;
    stampede counts the computations and those beyond the first.
    """
    table = Table(
        title=f"qapp race --lab: {requests} requests per row, {concurrency} at a time "
        "(sessions: one cookie; stampede: one cold key)"
    )
    for name in ("row", "strategy", "store"):
        table.add_column(name)
    for name in ("workers", "answers", "counted", "went wrong", "workers seen", "req/s"):
        table.add_column(name, justify="right")
    order = {(row, s): i for i, (row, pair) in enumerate(ROWS.items()) for s in pair}
    for o in sorted(outcomes, key=lambda o: order[(o.row, o.strategy)]):
        answers = str(o.answers) if not o.errors else f"{o.answers} [red]({o.errors} failed)[/]"
        if o.lost is not None:
            counted, wrong = f"moved {o.counted}", f"lost {_count(o.lost)}"
        else:
            counted, wrong = f"computed {o.counted}", f"recomputed {_count(o.recomputed or 0)}"
        table.add_row(
            o.row,
            o.strategy,
            o.store,
            "–" if o.workers is None else str(o.workers),
            answers,
            counted,
            wrong,
            str(o.workers_seen),
            f"{o.requests_per_second:,.0f}",
        )
    return table


# --- the command -----------------------------------------------------------------


def _names(text: str) -> list[str]:
    if text.strip() == "none":
        return []  # --lab rows only
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown strategy {', '.join(unknown) or text!r}; valid: {', '.join(STRATEGIES)}"
        )
    return names


def _lab_rows(text: str) -> list[str]:
    rows = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [row for row in rows if row not in ROWS]
    if unknown or not rows:
        raise argparse.ArgumentTypeError(
            f"unknown lab row {', '.join(unknown) or text!r}; valid: {', '.join(ROWS)}"
        )
    return rows


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


def _server_url(text: str) -> str:
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises on a port that is not 0..65535
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"not an http:// URL: {text!r}, e.g. http://127.0.0.1:8000"
        )
    return text


def plain(text: str) -> str:
    """A docstring as terminal text: without reStructuredText's ``literal`` and *emphasis* marks."""
    return text.replace("``", "").replace("::\n", ":\n").replace("*", "")


def add_parser(commands: Any) -> None:
    """Add race to the qapp command's sub-commands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "race",
        help="fire concurrent increments at each counter strategy and count lost updates",
        description=plain(lab.__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--url",
        type=_server_url,
        default="http://127.0.0.1:8000",
        help="a running qapp (default: %(default)s)",
    )
    target.add_argument(
        "--spawn",
        action="store_true",
        help="start hypercorn servers of its own for each --workers × --store, then stop them",
    )
    target.add_argument(
        "--failover",
        action="store_true",
        help="kill a Redis master under --concurrency clients, plain then durable (WAIT 1), "
        "and count the numbers handed out twice; starts Redis, Sentinel and qapp itself",
    )
    parser.add_argument(
        "--strategy",
        type=_names,
        default=list(STRATEGIES),
        help="comma-separated strategies (default: all five; none: --lab rows only)",
    )
    parser.add_argument(
        "--lab",
        type=_lab_rows,
        default=[],
        help="also fire the lab's rows, after the counters: sessions (session dict vs "
        "session.incr), stampede (cache-aside vs cached); comma-separated",
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
    # soft_wrap: a message stays one line, however narrow the terminal or pipe.
    err = Console(stderr=True, soft_wrap=True)
    if args.failover:
        require("redis", "--failover")
        return failover.command(args, out, err)
    if args.spawn and "redis" in args.store:
        require("redis", "--store redis (one of --spawn's defaults)")
    if not args.strategy and not args.lab:
        err.print("[bold red]qapp race:[/] nothing to race: --strategy none needs --lab")
        return 2
    lab_outcomes: list[LabOutcome] = []

    def lab_rows(url: str, workers: int | None, label: str, progress: Progress) -> None:
        if args.lab:
            lab_outcomes.extend(
                asyncio.run(
                    race_lab.race_lab(
                        url, args.lab, args.requests, args.concurrency, progress, workers, label
                    )
                )
            )

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
                    each_server=lambda url, workers, label: lab_rows(url, workers, label, progress),
                )
            else:
                url = args.url.rstrip("/")
                outcomes = asyncio.run(
                    lab.race_server(url, args.strategy, args.requests, args.concurrency, progress)
                )
                lab_rows(url, None, "", progress)
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
        if args.lab:
            report["lab"] = [o.as_dict() for o in lab_outcomes]
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        if args.strategy:
            out.print(render(outcomes, args.requests, args.concurrency))
        if args.lab:
            out.print(render_lab(lab_outcomes, args.requests, args.concurrency))
    return 0
