"""qapp race: fire concurrent increments at qapp and count what went wrong.

Against a running server (--url) or against servers it starts itself
(--spawn: qapp serve, with its defaults, for each
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

With --lab sessions,stampede it also fires the lab's two more rows on each
server (a session dict against session.incr, cache-aside against cached;
see qapp.tools.race_lab), and --strategy none skips the counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress

from qapp.service.counters import STRATEGIES
from qapp.testing import HypercornServer, RedisServer, fire, fresh_connections

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


async def fire_strategy(
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
    report = await fire(
        f"{url}/counter/{strategy}",
        requests=requests,
        concurrency=concurrency,
        client=client,
        on_answer=lambda _: advance(),
    )
    # Refused (503), dropped or garbled answers handed out no number.
    answers = [
        (a.value, a.worker) for a in report.ok if type(a.value) is int and type(a.worker) is int
    ]
    return answers, requests - len(answers), report.seconds


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
    async with fresh_connections(concurrency, REQUEST_TIMEOUT) as client:
        store = await store_name(client, url)
        for strategy in strategies:
            task = progress.add_task(f"{label}{strategy}", total=requests)
            answers, errors, seconds = await fire_strategy(
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
    each_server: Callable[[str, int, str], None] | None = None,
) -> list[Outcome]:
    """Start hypercorn for each (store, workers) pair, race every strategy, stop it all.

    ``each_server(url, workers, label)``, if given, runs on each server after
    the strategies (``qapp race --lab`` fires its rows there).
    """
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
            env = {
                "QAPP_STORE_URL": store_url,
                "QAPP_INSTANCE_PATH": str(instance),
                # Every stampede read of the lab is a new key's: one client (this
                # one, on loopback) would spend the quota a visitor is allowed.
                "QAPP_MEMO_QUOTA": "off",
            }
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
                if each_server is not None:
                    each_server(server.url, workers, f"{store} ×{workers} ")
    return outcomes
