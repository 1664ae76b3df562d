"""qapp race: fire concurrent increments at qapp and count what went wrong.

Against a running server (--url) or against servers it starts itself
(--spawn: hypercorn from the repository's hypercorn.toml for each
combination of --workers and --store, and a redis-server of its own),
it POSTs --requests increments per strategy, --concurrency at a time,
each on a fresh connection so that the load spreads over the workers.

What it counts (one *counter* is what an increment changes: the store's one
counter for shared-unsafe, shared-locked and atomic, but each
worker's own counter for unsafe and locked, since each worker counts
alone; on a memory:// store every strategy's counter is per worker)::

    answers    requests answered 200 with a number
    distinct   different numbers among the answers
    repeated   answers - distinct: answers that carried a number another
               answer carried too, whichever worker gave it
    lost       answers - counted, where counted is the sum over the counters
               of (value after the run - value before it): increments that
               were answered but did not stick

A counter's value before the run is one less than the lowest number it handed
out (its first increment read that value); its value after is read with GET.
So locked on 4 workers loses nothing yet repeats numbers, unsafe does
both, and a correct shared counter does neither. The counts assume nobody
else increments the same counters during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qapp.counters import STRATEGIES
from qapp.servers import HypercornServer, RedisServer, ServerError

#: Stores --spawn can start a server on.
SPAWN_STORES = ("sqlite", "redis", "memory")
#: Seconds one request may take; shared-locked queues requests for a while.
REQUEST_TIMEOUT = 90.0


class RaceError(Exception):
    """The race cannot run (server unreachable, not qapp, …); the message says why."""


@dataclass
class Outcome:
    """What one strategy's run against one server showed."""

    strategy: str
    store: str
    #: Worker processes the server was started with; None when not known (--url).
    workers: int | None
    requests: int
    answers: int
    errors: int
    distinct: int
    lost: int
    repeated: int
    workers_seen: int
    seconds: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requests_per_second": round(self.requests_per_second, 1)}


# --- talking to one server ----------------------------------------------------


def fresh_connections(concurrency: int) -> httpx.AsyncClient:
    """A client that opens a new connection for every request.

    Reused keep-alive connections would pin each client lane to one worker;
    a fresh connection is accepted by whichever worker gets there first.
    """
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    return httpx.AsyncClient(
        timeout=REQUEST_TIMEOUT, limits=limits, headers={"Connection": "close"}
    )


async def store_name(client: httpx.AsyncClient, url: str) -> str:
    """The server's store as /health names it; :class:`RaceError` if it is not reachable."""
    try:
        response = await client.get(f"{url}/health")
    except httpx.TransportError as exc:
        raise RaceError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    try:
        name: str = response.json()["store"]
    except (ValueError, KeyError, TypeError):
        raise RaceError(
            f"{url} answered /health with HTTP {response.status_code}, not qapp's health check"
        ) from None
    if response.status_code != 200:
        raise RaceError(f"{url} is up but its store is not: {response.json().get('message')}")
    return name


async def fire(
    client: httpx.AsyncClient,
    url: str,
    strategy: str,
    requests: int,
    concurrency: int,
    advance: Callable[[], None],
) -> tuple[list[tuple[int, int]], int, float]:
    """POST requests increments, concurrency in flight at once.

    Returns the answers as (value, worker) pairs, the number of requests
    that failed, and the seconds the whole burst took.
    """
    answers: list[tuple[int, int]] = []
    errors = 0
    pending = iter(range(requests))

    async def lane() -> None:
        nonlocal errors
        # The lanes share one iterator: each takes the next request until none are left.
        for _ in pending:
            try:
                response = await client.post(f"{url}/counter/{strategy}")
                response.raise_for_status()
                body = response.json()
                answers.append((int(body["value"]), int(body["worker"])))
            except (httpx.HTTPError, ValueError, TypeError, KeyError):
                # Refused (503), dropped or garbled: no number was handed out.
                errors += 1
            advance()

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(min(concurrency, requests))))
    return answers, errors, time.perf_counter() - started


async def final_values(
    client: httpx.AsyncClient, url: str, strategy: str, workers: set[int] | None
) -> dict[int | None, int]:
    """Each counter's value now: the shared one (key None), or each listed worker's.

    A worker's own counter can only be read from that worker, so GET is
    repeated on fresh connections until every worker has answered, or a
    bounded number of tries is spent.
    """
    found: dict[int | None, int] = {}
    tries = 1 if workers is None else 30 * len(workers)
    for _ in range(tries):
        try:
            response = await client.get(f"{url}/counter/{strategy}")
            body = response.json()
        except (httpx.TransportError, ValueError):
            continue
        if response.status_code != 200:
            continue
        if workers is None:
            return {None: int(body["value"])}
        if body["worker"] in workers:
            found[body["worker"]] = int(body["value"])
        if len(found) == len(workers):
            break
    return found


def tally(
    strategy: str,
    store: str,
    workers: int | None,
    requests: int,
    answers: list[tuple[int, int]],
    errors: int,
    seconds: float,
    finals: dict[int | None, int],
) -> Outcome:
    """Turn a run's answers and final values into the counts the module docstring defines."""
    per_counter: dict[int | None, list[int]] = defaultdict(list)
    alone = per_worker(strategy, store)
    for value, worker in answers:
        per_counter[worker if alone else None].append(value)
    counted = 0
    for counter, values in per_counter.items():
        before = min(values) - 1
        # A worker whose final value could not be read counts from its
        # highest answer: exact for correct strategies, and for racing ones
        # it can only hide losses, never invent them.
        after = finals.get(counter, max(values))
        counted += after - before
    values = [value for value, _ in answers]
    return Outcome(
        strategy=strategy,
        store=store,
        workers=workers,
        requests=requests,
        answers=len(answers),
        errors=errors,
        distinct=len(set(values)),
        lost=len(answers) - counted,
        repeated=len(answers) - len(set(values)),
        workers_seen=len({worker for _, worker in answers}),
        seconds=seconds,
    )


def per_worker(strategy: str, store: str) -> bool:
    """True if each worker keeps its own counter for strategy on store."""
    return STRATEGIES[strategy].scope == "worker" or store == "memory"


async def race_server(
    url: str,
    strategies: Sequence[str],
    requests: int,
    concurrency: int,
    progress: Progress,
    workers: int | None = None,
    label: str = "",
) -> list[Outcome]:
    """Run every strategy against the server at url, one after the other."""
    outcomes = []
    async with fresh_connections(concurrency) as client:
        store = await store_name(client, url)
        for strategy in strategies:
            task = progress.add_task(f"{label}{strategy}", total=requests)
            answers, errors, seconds = await fire(
                client,
                url,
                strategy,
                requests,
                concurrency,
                functools.partial(progress.advance, task),
            )
            seen = {worker for _, worker in answers}
            finals = await final_values(
                client, url, strategy, seen if per_worker(strategy, store) else None
            )
            outcomes.append(
                tally(strategy, store, workers, requests, answers, errors, seconds, finals)
            )
    return outcomes


# --- starting servers of its own ----------------------------------------------


def spawn_matrix(
    workers_list: Sequence[int],
    stores: Sequence[str],
    strategies: Sequence[str],
    requests: int,
    concurrency: int,
    progress: Progress,
) -> list[Outcome]:
    """Start hypercorn for each (store, workers) pair, race every strategy, stop it all."""
    outcomes: list[Outcome] = []
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer()) if "redis" in stores else None
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qapp-race-")))
        for n, (store, workers) in enumerate(itertools.product(stores, workers_list)):
            instance = scratch / f"server-{n}"
            if store == "sqlite":
                store_url = f"sqlite://{instance / 'race.db'}"
            elif store == "redis":
                assert redis is not None
                # A database of its own per server, so no run sees another's counters.
                store_url = f"{redis.url.rsplit('/', 1)[0]}/{n % 16}"
            else:
                store_url = "memory://"
            env = {"QAPP_STORE_URL": store_url, "QAPP_INSTANCE_PATH": str(instance)}
            progress.console.print(f"starting hypercorn: {workers} worker(s) on {store}")
            with HypercornServer(workers=workers, env=env) as server:
                outcomes += asyncio.run(
                    race_server(
                        server.url,
                        strategies,
                        requests,
                        concurrency,
                        progress,
                        workers=workers,
                        label=f"{store} ×{workers} ",
                    )
                )
    return outcomes


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
        description=__doc__,
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
                outcomes = spawn_matrix(
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
                    race_server(url, args.strategy, args.requests, args.concurrency, progress)
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
