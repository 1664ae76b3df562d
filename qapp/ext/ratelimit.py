"""Rate limits on routes: ``@qapp.rate_limit("5/minute")``, exact across workers and hosts.

Over the limit, a route answers 429 with ``Retry-After``; every answer of a
counted request carries the limits in headers (see :func:`set_headers`).
The count lives in a store (:func:`qapp.store.ratelimit.count`, atomic
``incr``), so it is exact for every worker and host that shares it; on
``memory://`` each worker counts alone and allows its own N. The default
strategy is the sliding window, which lets no 2N burst through at a window
boundary; ``strategy="fixed"`` keeps one counter per window.

``"10/second;100/minute"`` counts each limit apart and the tightest decides.
Two stacked ``@rate_limit`` decorators count apart, since a counter's key
has the limit in it. ``QAPP_RATELIMIT_DEFAULT`` limits every route without
a limit of its own (:mod:`qapp.ext.ratelimit_default`), and
``QAPP_RATELIMIT_ENABLED=off`` turns every limit off.

By default a limit counts per :func:`~qapp.ext.client.client_key`: the
client's address, walked through the proxies in ``QAPP_TRUSTED_PROXIES``,
an IPv6 one as its /64 (``QAPP_IPV6_PREFIX``); :mod:`qapp.ext.client` has
the rules.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Literal, ParamSpec, TypeVar

from quart import Quart, Response, after_this_request, g
from werkzeug.exceptions import TooManyRequests
from werkzeug.wrappers import Response as WerkzeugResponse

from qapp.ext.client import client_address, client_key, ipv6_prefix, trusted_proxies
from qapp.ext.context import QappState, state_of
from qapp.ext.errors import error_response
from qapp.state import StoreUnavailable
from qapp.store import metrics
from qapp.store.ratelimit import Limit, Strategy, Verdict, count, parse_limits
from qapp.store.ratelimit import refund as uncount

__all__ = [
    "RateLimited",
    "check",
    "client_address",
    "client_key",
    "install",
    "ipv6_prefix",
    "rate_limit",
    "refund",
    "set_headers",
    "trusted_proxies",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: What a limit does when its store cannot be reached: refuse (503) or let the request in.
OnStoreError = Literal["deny", "allow"]

#: At most one warning per this many seconds about limits let through on a store error.
WARN_EVERY = 60.0

#: The attribute that marks a view as limited by ``@rate_limit`` (default limits skip it).
LIMITED = "qapp_rate_limited"


class RateLimited(TooManyRequests):
    """Over a rate limit: a JSON 429 with ``Retry-After`` and ``RateLimit`` headers."""

    def __init__(self, verdict: Verdict, message: str = "too many requests; retry later") -> None:
        super().__init__(message)
        self.verdict = verdict


def _tightness(verdict: Verdict) -> tuple[bool, float]:
    """A sort key, tightest first: refused ones (the longest wait first), then the fewest left."""
    return (verdict.allowed, verdict.remaining if verdict.allowed else -verdict.reset)


def set_headers(response: Response | WerkzeugResponse, verdicts: list[Verdict]) -> None:
    """Put ``verdicts`` (every limit counted, the tightest first) in ``response``'s headers.

    The fields of draft-ietf-httpapi-ratelimit-headers (revisions 08 to 11),
    one list member per limit, named by the limit: ``RateLimit-Policy:
    "5/60s";q=5;w=60`` and ``RateLimit: "5/60s";r=2;t=41``; and, for
    clients of the older drafts, ``RateLimit-Limit``, ``RateLimit-Remaining``
    and ``RateLimit-Reset`` of the tightest limit.
    """
    tightest = verdicts[0]
    response.headers["RateLimit-Limit"] = str(tightest.limit.count)
    response.headers["RateLimit-Remaining"] = str(tightest.remaining)
    response.headers["RateLimit-Reset"] = str(tightest.retry_after)
    policies = []
    states = []
    for verdict in verdicts:
        name = verdict.limit.name
        window = max(1, math.ceil(verdict.limit.period))
        policies.append(f'"{name}";q={verdict.limit.count};w={window}')
        states.append(f'"{name}";r={verdict.remaining};t={math.ceil(verdict.reset)}')
    response.headers["RateLimit-Policy"] = ", ".join(policies)
    response.headers["RateLimit"] = ", ".join(states)


def _record(verdict: Verdict) -> None:
    """Keep ``verdict`` for the answer's headers, the tightest of each limit first."""
    counted: dict[str, Verdict] | None = g.get("qapp_ratelimits")
    if counted is None:
        # Only a request that was counted gets the headers: no hook runs for the others.
        counted = {}
        g.qapp_ratelimits = counted
        after_this_request(_with_headers)
    name = verdict.limit.name
    if name not in counted or _tightness(verdict) <= _tightness(counted[name]):
        counted[name] = verdict


def _warn_store_error(state: QappState, exc: Exception) -> None:
    """Log that limits let requests through on a store error, at most once a minute."""
    now = time.monotonic()
    if now - state.ratelimit_warned >= WARN_EVERY:
        state.ratelimit_warned = now
        log.warning("rate limits let requests through: their store is unavailable (%s)", exc)


async def check(
    limit: str | Limit | tuple[Limit, ...],
    key: str,
    *,
    scope: str,
    store: str = "default",
    cost: int = 1,
    strategy: Strategy = "sliding",
    on_store_error: OnStoreError | None = None,
) -> Verdict:
    """Count one event of ``key`` against ``limit`` in ``scope``; raise :class:`RateLimited`.

    For limits a route applies itself, e.g. per account inside a login.
    ``limit`` may hold several (``"10/second;100/minute"``), each counted
    apart; the tightest verdict is returned (the others in its ``also``).
    ``on_store_error="allow"`` lets the request in when the store cannot be
    reached (default: ``QAPP_RATELIMIT_ON_STORE_ERROR``, "deny": a 503).
    """
    limits = parse_limits(limit)
    state = state_of()
    settings = state.settings
    if settings is not None and not settings.ratelimit_enabled:
        return Verdict(True, limits[0], limits[0].count, 0.0, counted=0)
    counters = state.store(store).namespace("ratelimit")
    tag = "" if strategy == "sliding" else f":{strategy}"
    verdicts: list[Verdict] = []
    try:
        for each in limits:
            counter = f"{scope}:{each.name}{tag}:{key}"
            verdicts.append(await count(counters, counter, each, cost, strategy))
    except StoreUnavailable as exc:
        policy = on_store_error or (settings.ratelimit_on_store_error if settings else "deny")
        if policy != "allow":
            raise
        _warn_store_error(state, exc)
        return Verdict(True, limits[0], limits[0].count, 0.0, counted=0)
    verdicts.sort(key=_tightness)
    for verdict in verdicts:
        _record(verdict)
    tightest = replace(verdicts[0], also=tuple(verdicts[1:]))
    if not tightest.allowed:
        if strategy == "sliding":
            # A refused sliding event counts nowhere: give back what the other limits took.
            for verdict in verdicts:
                await uncount(counters, verdict, cost)
        metrics.rate_limited(scope)
        raise RateLimited(tightest)
    return tightest


async def refund(verdict: Verdict, *, store: str = "default", cost: int = 1) -> None:
    """Give back what :func:`check` counted for ``verdict``: for limits that count failures.

    E.g. a login counts every attempt before it checks the password, so that
    concurrent guesses cannot all get in before the first failure is counted,
    and gives the attempt back when the password was right. Works for both
    strategies and for every limit the verdict's check counted.
    """
    counters = state_of().store(store).namespace("ratelimit")
    for each in (verdict, *verdict.also):
        await uncount(counters, each, cost)


def rate_limit(
    limit: str | Limit,
    *,
    key: Callable[[], str] | None = None,
    scope: str | None = None,
    store: str = "default",
    strategy: Strategy = "sliding",
    on_store_error: OnStoreError | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Limit a route to ``limit`` per ``key()`` (default: :func:`~qapp.ext.client.client_key`).

    ``scope`` names the counter (default: the view's name), so that two
    routes sharing a scope and a limit share one budget. ``limit`` may be
    several (``"10/second;100/minute"``); see :func:`check` for the rest.
    """
    limits = parse_limits(limit)  # a bad limit fails at import, not at the first request
    who = key or client_key

    def decorator(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        name = scope or f"{view.__module__}.{view.__qualname__}"

        @functools.wraps(view)
        async def limited(*args: P.args, **kwargs: P.kwargs) -> R:
            await check(
                limits,
                who(),
                scope=name,
                store=store,
                strategy=strategy,
                on_store_error=on_store_error,
            )
            return await view(*args, **kwargs)

        setattr(limited, LIMITED, True)
        return limited

    return decorator


async def _with_headers(response: Response | WerkzeugResponse) -> Response | WerkzeugResponse:
    """Put the verdicts of the request in its answer's ``RateLimit`` headers."""
    counted: dict[str, Verdict] | None = g.get("qapp_ratelimits")
    if counted:
        set_headers(response, sorted(counted.values(), key=_tightness))
    return response


def install(app: Quart) -> None:
    """Answer :class:`RateLimited` as a JSON 429; :func:`check` puts ``RateLimit`` headers
    on the answers of the requests it counts."""

    @app.errorhandler(RateLimited)
    async def too_many(exc: RateLimited) -> Response:
        response = error_response(429, "too_many_requests", exc.description or "")
        response.headers["Retry-After"] = str(exc.verdict.retry_after)
        return response
