"""``qapp race --failover``: kill a Redis master under load and count the numbers handed out twice.

Each run starts a master with two replicas and three sentinels, and 4 qapp
workers on the Sentinel URL, then sends ``POST /counter/atomic`` from
``clients`` clients at once and, under that load:

1. *holds the replicas back*: they replicate through a relay that stops
   passing the stream on (the master keeps acknowledging increments);
2. kills the master (SIGKILL) ``hold`` seconds later, and cuts the relay:
   what it held is lost, as the unsent tail of a dying master is;
3. lets Sentinel promote a replica, and keeps the load on until the new
   master has served for a while.

Then it counts the numbers handed out twice. In *plain* mode the master
acknowledged increments that no replica had, so the promoted replica counts
through them again. In *durable* mode (``?wait_replicas=1``) an increment is
acknowledged only once a replica holds it: during the hold there is none, so
those requests get a 503 instead of a number, and none is handed out twice.
Two replicas, because after the failover the new master needs one to
confirm its writes.

The hold is what makes the window visible on loopback: without it the
replicas receive every write within microseconds of the master, and a kill
loses nothing measurable. On real networks replication lag is the hold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console
from rich.table import Table

from qapp.testing import KEEPALIVE_EXPIRY, HypercornServer, ServerError

if TYPE_CHECKING:
    from qapp.tools.sentinel import RedisSentinel

__all__ = ["MODES", "FailoverRun", "Reply", "command", "run_failover"]

#: Each mode's query on the Sentinel URL.
MODES = {"plain": "", "durable": "?wait_replicas=1&wait_timeout=0.5"}
#: Seconds a client waits for an answer before it counts as hung.
REQUEST_TIMEOUT = 15.0


@dataclass(frozen=True)
class Reply:
    """One request's fate on the monotonic clock: its status (0: no answer) and number."""

    sent: float
    answered: float
    status: int
    value: int | None = None
    #: For a 503: True if it had the project's JSON body and a Retry-After header.
    well_formed: bool = False
    error: str | None = None


@dataclass
class FailoverRun:
    """What one run showed; the times are on the monotonic clock."""

    mode: str
    clients: int
    replies: list[Reply] = field(default_factory=list)
    held: float = 0.0
    killed: float = 0.0
    promoted: float = 0.0

    @property
    def values(self) -> list[int]:
        """The numbers the 200 answers handed out."""
        return [r.value for r in self.replies if r.status == 200 and r.value is not None]

    @property
    def repeated(self) -> int:
        """Answers that carried a number another answer carried too."""
        return len(self.values) - len(set(self.values))

    @property
    def statuses(self) -> Counter[int]:
        """How many answers had each status; 0 counts requests without one."""
        return Counter(r.status for r in self.replies)

    @property
    def slowest(self) -> float:
        """Seconds the slowest request took."""
        return max((r.answered - r.sent for r in self.replies), default=0.0)

    @property
    def recovery(self) -> float | None:
        """Seconds from the promotion to the first 200 sent after it; None if none came."""
        firsts = [r.answered for r in self.replies if r.status == 200 and r.sent > self.promoted]
        return min(firsts) - self.promoted if firsts else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "clients": self.clients,
            "answers": len(self.replies),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "repeated": self.repeated,
            "held_seconds": round(self.killed - self.held, 3),
            "promotion_seconds": round(self.promoted - self.killed, 3),
            "recovery_seconds": None if self.recovery is None else round(self.recovery, 3),
            "slowest_seconds": round(self.slowest, 3),
        }


async def _send(client: httpx.AsyncClient, url: str) -> Reply:
    sent = time.monotonic()
    try:
        response = await client.post(url)
    except httpx.HTTPError as exc:
        return Reply(sent, time.monotonic(), 0, error=type(exc).__name__)
    answered = time.monotonic()
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    value = body.get("value") if response.status_code == 200 else None
    well_formed = (
        response.status_code == 503
        and isinstance(body.get("error"), str)
        and response.headers.get("content-type") == "application/json"
        and int(response.headers.get("retry-after", "0")) >= 1
    )
    return Reply(sent, answered, response.status_code, value, well_formed)


async def _drive(
    run: FailoverRun,
    topology: RedisSentinel,
    web_url: str,
    hold: float,
    settle: float,
    say: Callable[[str], None],
) -> None:
    """Load, hold, kill, wait for the promotion, settle; every reply lands in ``run``."""
    stop = asyncio.Event()
    limits = httpx.Limits(
        max_connections=run.clients,
        max_keepalive_connections=run.clients,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits) as client:

        async def lane() -> None:
            while not stop.is_set():
                reply = await _send(client, f"{web_url}/counter/atomic")
                run.replies.append(reply)
                if reply.status != 200:
                    await asyncio.sleep(0.02)  # poll an outage, do not spin on it

        lanes = [asyncio.create_task(lane()) for _ in range(run.clients)]
        try:
            await asyncio.sleep(1.5)
            assert topology.relay is not None
            topology.relay.hold()
            run.held = time.monotonic()
            say(f"{run.mode}: replication held back; the master alone has the next increments")
            await asyncio.sleep(hold)
            old = topology.master
            old.kill()
            topology.relay.cut()
            run.killed = time.monotonic()
            say(f"{run.mode}: master killed after {run.killed - run.held:.1f} s of hold")
            run.promoted = await asyncio.to_thread(topology.wait_promotion, old)
            say(f"{run.mode}: Sentinel promoted a replica {run.promoted - run.killed:.1f} s later")
            await asyncio.sleep(settle)
        finally:
            stop.set()
            await asyncio.gather(*lanes)


def run_failover(
    mode: str,
    *,
    clients: int = 200,
    workers: int = 4,
    hold: float = 1.0,
    settle: float = 4.0,
    say: Callable[[str], None] = lambda _: None,
) -> FailoverRun:
    """Start everything, run the failover in ``mode`` (plain or durable), stop everything."""
    # Here, not at the top: the Sentinel's admin client is redis-py (qapp[redis]),
    # which the rest of ``qapp race`` does without.
    from qapp.tools.sentinel import RedisSentinel

    run = FailoverRun(mode, clients)
    with contextlib.ExitStack() as stack:
        topology = stack.enter_context(RedisSentinel(replicas=2, relay=True))
        instance = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qapp-failover-")))
        env = {"QAPP_STORE_URL": topology.url + MODES[mode], "QAPP_INSTANCE_PATH": str(instance)}
        say(f"{mode}: master, 2 replicas, 3 sentinels up; starting {workers} qapp workers")
        web = stack.enter_context(HypercornServer(workers=workers, env=env))
        asyncio.run(_drive(run, topology, web.url, hold, settle, say))
    return run


def render(runs: list[FailoverRun]) -> Table:
    """The runs side by side, a row per mode."""
    table = Table(title="qapp race --failover: POST /counter/atomic while the master is killed")
    for name in ("mode", "clients", "answers", "200", "503", "other", "repeated"):
        table.add_column(name, justify="left" if name == "mode" else "right")
    for name in ("held (s)", "promotion (s)", "back after (s)", "slowest (s)"):
        table.add_column(name, justify="right")
    for run in runs:
        statuses = run.statuses
        other = sum(n for status, n in statuses.items() if status not in (200, 503))
        recovery = "–" if run.recovery is None else f"{run.recovery:.2f}"
        table.add_row(
            run.mode,
            str(run.clients),
            str(len(run.replies)),
            str(statuses[200]),
            str(statuses[503]),
            f"[red]{other}[/]" if other else "0",
            f"[red]{run.repeated}[/]" if run.repeated else "[green]0[/]",
            f"{run.killed - run.held:.1f}",
            f"{run.promoted - run.killed:.1f}",
            recovery,
            f"{run.slowest:.2f}",
        )
    return table


#: What the table cannot say: printed under it, and in docs/race-lab.md.
NOTE = (
    "The replicas were held back (a relay stopped passing the replication stream) for "
    "'held' seconds before the master was killed: on loopback replication is otherwise "
    "near instant and a kill loses nothing measurable. The hold is what makes the window "
    "visible. plain: the promoted replica never had the held increments and hands their "
    "numbers out again. durable (WAIT 1): no replica confirmed them, so those requests got "
    "a 503 and no number is handed out twice."
)


def command(args: argparse.Namespace, out: Console, err: Console) -> int:
    """``qapp race --failover``: both modes, a table, and what it means."""
    say = (lambda _: None) if args.json else (lambda text: err.print(text, highlight=False))
    clients = max(args.concurrency, 1)
    workers = max(args.workers)
    try:
        runs = [run_failover(mode, clients=clients, workers=workers, say=say) for mode in MODES]
    except ServerError as exc:
        err.print(f"[bold red]qapp race --failover:[/] {exc}", highlight=False)
        return 1
    if args.json:
        sys.stdout.write(json.dumps({"failover": [r.as_dict() for r in runs]}, indent=2) + "\n")
    else:
        out.print(render(runs))
        out.print(NOTE)
    return 0
