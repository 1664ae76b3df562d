"""Fire a race at any route and count what came back: proof that a route is race-free.

A counter is correct when ``N`` concurrent requests get ``N`` different
numbers; a cache is correct when ``N`` concurrent cold reads compute once.
:func:`fire` sends ``requests`` requests, ``concurrency`` at a time, each on
a fresh connection by default so that the load spreads over every worker
(a kept-alive connection stays with the worker that accepted it), and
returns a :class:`RaceReport`::

    report = race(f"{server.url}/hits", requests=200, concurrency=100,
                  value=lambda body: body["hits"])
    assert report.statuses == {200: 200}
    assert report.repeated == 0 and report.distinct == 200

Nothing here knows qapp's routes: ``value`` and ``worker`` pick the number
and the answering worker (a pid, if the route tells) out of each JSON body.

The requests go out with httpx, which the ``lab`` extra installs
(``pip install 'qapp[lab]'``); without it, :func:`fire` and :func:`race`
raise :class:`~qapp.store.extras.MissingExtra` and the rest of
:mod:`qapp.testing` still imports.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any

from qapp.store.extras import require

if TYPE_CHECKING:
    import httpx

__all__ = ["Answer", "RaceReport", "fire", "fresh_connections", "race"]

#: Picks a value out of a JSON body; None when the body has none.
Pick = Callable[[Any], Any]


def _field(name: str) -> Pick:
    def pick(body: Any) -> Any:
        return body.get(name) if isinstance(body, dict) else None

    return pick


@dataclass(frozen=True)
class Answer:
    """One request's outcome: its status (0: no answer at all), value and worker."""

    status: int
    value: Any = None
    worker: Any = None


@dataclass
class RaceReport:
    """What a race showed: every answer, and the counts that tell a race from none."""

    requests: int
    seconds: float
    answers: list[Answer] = field(default_factory=list)

    @property
    def statuses(self) -> Counter[int]:
        """How many answers had each status; 0 counts requests that got no answer."""
        return Counter(a.status for a in self.answers)

    @property
    def ok(self) -> list[Answer]:
        """The 2xx answers."""
        return [a for a in self.answers if 200 <= a.status < 300]

    @property
    def values(self) -> list[Any]:
        """The values of the 2xx answers that carried one."""
        return [a.value for a in self.ok if a.value is not None]

    @property
    def distinct(self) -> int:
        """Different values among the answers."""
        return len(set(self.values))

    @property
    def repeated(self) -> int:
        """Answers that carried a value another answer carried too."""
        return len(self.values) - self.distinct

    @property
    def errors(self) -> int:
        """Requests that got no 2xx answer."""
        return self.requests - len(self.ok)

    @property
    def workers(self) -> set[Any]:
        """The workers that answered, where answers name them."""
        return {a.worker for a in self.ok if a.worker is not None}


def _need_httpx() -> None:
    require("lab", "race() and fire() of qapp.testing", "httpx")


def fresh_connections(
    concurrency: int, timeout: float = 90.0, *, keep_cookies: bool = True
) -> httpx.AsyncClient:
    """A client that opens a new connection for every request.

    Reused keep-alive connections would pin each lane to one worker; a fresh
    connection is accepted by whichever worker gets there first. With
    ``keep_cookies=False`` each request is a new client too: a cookie one
    answer sets is not sent with the next.
    """
    _need_httpx()
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    jar = None if keep_cookies else CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(
        timeout=timeout, limits=limits, headers={"Connection": "close"}, cookies=jar
    )


async def fire(
    url: str,
    *,
    method: str = "POST",
    requests: int = 100,
    concurrency: int = 100,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    value: Pick | str = "value",
    worker: Pick | str = "worker",
    client: httpx.AsyncClient | None = None,
    on_answer: Callable[[Answer], None] | None = None,
) -> RaceReport:
    """Send ``requests`` requests to ``url``, ``concurrency`` in flight at once.

    Args:
        value: a JSON field name, or a function of the body, that gives
            each answer's value.
        worker: the same, for the worker that answered.
        client: an httpx client to use (default: :func:`fresh_connections`).
        on_answer: called after each answer, e.g. to advance a progress bar.
    """
    _need_httpx()
    import httpx

    sent = dict(headers or {})
    if cookies:
        # As a header: httpx deprecates cookies given per request.
        sent["Cookie"] = "; ".join(f"{name}={val}" for name, val in cookies.items())
    pick_value = _field(value) if isinstance(value, str) else value
    pick_worker = _field(worker) if isinstance(worker, str) else worker
    report = RaceReport(requests=requests, seconds=0.0)
    pending = iter(range(requests))

    async def lane(http: httpx.AsyncClient) -> None:
        # The lanes share one iterator: each takes the next request until none are left.
        for _ in pending:
            try:
                response = await http.request(method, url, json=json, headers=sent)
            except httpx.HTTPError:
                answer = Answer(0)
            else:
                try:
                    body = response.json()
                except ValueError:
                    body = None
                answer = Answer(response.status_code, pick_value(body), pick_worker(body))
            report.answers.append(answer)
            if on_answer is not None:
                on_answer(answer)

    started = time.perf_counter()
    lanes = min(concurrency, requests)
    if client is None:
        # Every request its own client: no cookie an answer sets is sent on
        # (pass ``cookies`` to send one with all of them).
        async with fresh_connections(lanes, keep_cookies=False) as own:
            await asyncio.gather(*(lane(own) for _ in range(lanes)))
    else:
        await asyncio.gather(*(lane(client) for _ in range(lanes)))
    report.seconds = time.perf_counter() - started
    return report


def race(url: str, **options: Any) -> RaceReport:
    """:func:`fire` from synchronous code (a plain test): runs its own event loop."""
    return asyncio.run(fire(url, **options))
