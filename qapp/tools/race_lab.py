"""``qapp race --lab``: the lab's two more rows, fired and counted like the counters.

- ``sessions``: one client (one cookie) fires --requests increments of a
  counter kept in its session, --concurrency at a time: ``naive`` keeps it in
  the session dict, loaded and written back whole by each request;
  ``atomic`` is ``session.incr``. **moved** is how far the counter went,
  **lost** the answers minus that.
- ``stampede``: --requests concurrent reads of one fresh key whose value takes
  half a second to compute: ``naive`` is cache-aside (get, compute, set),
  ``cached`` is qapp's single flight. **computed** is how many times the
  value was computed (counted atomically in the store), **recomputed** all
  but the first of them.

The routes are :mod:`qapp.service.lab`'s.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from rich.progress import Progress

from qapp.testing import fire, fresh_connections
from qapp.tools.race import REQUEST_TIMEOUT, RaceError, store_name

__all__ = ["ROWS", "LabOutcome", "race_lab"]

#: Each row's two strategies, the wrong way first.
ROWS: dict[str, tuple[str, str]] = {
    "sessions": ("naive", "atomic"),
    "stampede": ("naive", "cached"),
}


@dataclass
class LabOutcome:
    """What one strategy of one lab row showed against one server."""

    row: str
    strategy: str
    store: str
    #: Worker processes the server was started with; None when not known (--url).
    workers: int | None
    requests: int
    answers: int
    errors: int
    #: sessions: how far the counter moved; stampede: how often the value was computed.
    counted: int
    workers_seen: int
    seconds: float

    @property
    def lost(self) -> int | None:
        """sessions: increments answered that did not stick."""
        return self.answers - self.counted if self.row == "sessions" else None

    @property
    def recomputed(self) -> int | None:
        """stampede: computations beyond the one that was needed."""
        return max(self.counted - 1, 0) if self.row == "stampede" else None

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "lost": self.lost,
            "recomputed": self.recomputed,
            "requests_per_second": round(self.requests_per_second, 1),
        }


async def _json(client: httpx.AsyncClient, method: str, url: str) -> tuple[Any, httpx.Response]:
    try:
        response = await client.request(method, url)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise RaceError(f"{method} {url} failed: {exc or type(exc).__name__}") from None
    if response.status_code != 200:
        raise RaceError(f"{method} {url} answered HTTP {response.status_code}: {body}")
    return body, response


async def _sessions(
    client: httpx.AsyncClient,
    url: str,
    strategy: str,
    requests: int,
    concurrency: int,
    progress: Progress,
    label: str,
) -> tuple[int, Any]:
    """Give one client a session at 0, fire its increments, and read how far it moved."""
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as own:
        _, reset = await _json(own, "POST", f"{url}/lab/session/reset")
        cookies = dict(reset.cookies.items())
        if not cookies:
            raise RaceError(f"{url}/lab/session/reset set no session cookie")
        task = progress.add_task(f"{label}sessions/{strategy}", total=requests)
        report = await fire(
            f"{url}/lab/session/{strategy}",
            requests=requests,
            concurrency=concurrency,
            client=client,
            cookies=cookies,
            on_answer=lambda _: progress.advance(task),
        )
        # own kept the cookie: this reads the same client's counters.
        counts, _ = await _json(own, "GET", f"{url}/lab/session")
    return int(counts[strategy]), report


async def _stampede(
    client: httpx.AsyncClient,
    url: str,
    strategy: str,
    requests: int,
    concurrency: int,
    progress: Progress,
    label: str,
) -> tuple[int, Any]:
    """Fire cold reads of a fresh key, and read how often its value was computed."""
    key = f"race-{secrets.token_hex(6)}"
    task = progress.add_task(f"{label}stampede/{strategy}", total=requests)
    report = await fire(
        f"{url}/lab/stampede/{strategy}/{key}",
        method="GET",
        requests=requests,
        concurrency=concurrency,
        client=client,
        value="computation",
        on_answer=lambda _: progress.advance(task),
    )
    body, _ = await _json(client, "GET", f"{url}/lab/stampede/{strategy}/{key}/computations")
    return int(body["computations"]), report


async def race_lab(
    url: str,
    rows: Sequence[str],
    requests: int,
    concurrency: int,
    progress: Progress,
    workers: int | None = None,
    label: str = "",
) -> list[LabOutcome]:
    """Run each strategy of each row against the server at ``url``, one after the other."""
    outcomes = []
    async with fresh_connections(concurrency, REQUEST_TIMEOUT) as client:
        store = await store_name(client, url)
        for row in rows:
            run = _sessions if row == "sessions" else _stampede
            for strategy in ROWS[row]:
                counted, report = await run(
                    client, url, strategy, requests, concurrency, progress, label
                )
                outcomes.append(
                    LabOutcome(
                        row=row,
                        strategy=strategy,
                        store=store,
                        workers=workers,
                        requests=requests,
                        answers=len(report.ok),
                        errors=report.errors,
                        counted=counted,
                        workers_seen=len(report.workers),
                        seconds=report.seconds,
                    )
                )
    return outcomes
