"""Rate limits on routes: ``@qapp.rate_limit("5/minute")``, exact across workers and hosts.

Over the limit, a route answers 429 with ``Retry-After`` and the
``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` and
``RateLimit-Policy`` headers; an allowed answer carries the same headers.
The count lives in a store (:func:`qapp.store.ratelimit.hit`, one atomic
``incr`` per request), so it is exact for every worker and host that shares
it; on ``memory://`` each worker counts alone and allows its own N.

By default a limit counts per :func:`~qapp.ext.client.client_key`: the
client's address, walked through the proxies in ``QAPP_TRUSTED_PROXIES``,
an IPv6 one as its /64 (``QAPP_IPV6_PREFIX``); :mod:`qapp.ext.client` has
the rules.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from quart import Quart, Response, after_this_request, g
from werkzeug.exceptions import TooManyRequests
from werkzeug.wrappers import Response as WerkzeugResponse

from qapp.ext.client import client_address, client_key, ipv6_prefix, trusted_proxies
from qapp.ext.context import state_of
from qapp.ext.errors import error_response
from qapp.store import metrics
from qapp.store.ratelimit import Limit, Verdict, hit, parse_limit
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
    "trusted_proxies",
]

P = ParamSpec("P")
R = TypeVar("R")


class RateLimited(TooManyRequests):
    """Over a rate limit: a JSON 429 with ``Retry-After`` and ``RateLimit`` headers."""

    def __init__(self, verdict: Verdict, message: str = "too many requests; retry later") -> None:
        super().__init__(message)
        self.verdict = verdict


def _headers(response: Response | WerkzeugResponse, verdict: Verdict) -> None:
    response.headers["RateLimit-Limit"] = str(verdict.limit.count)
    response.headers["RateLimit-Remaining"] = str(verdict.remaining)
    response.headers["RateLimit-Reset"] = str(verdict.retry_after)
    response.headers["RateLimit-Policy"] = str(verdict.limit)


async def check(
    limit: str | Limit, key: str, *, scope: str, store: str = "default", cost: int = 1
) -> Verdict:
    """Count one event of ``key`` against ``limit`` in ``scope``; raise :class:`RateLimited`.

    For limits a route applies itself, e.g. per account inside a login.
    """
    parsed = parse_limit(limit)
    counters = state_of().store(store).namespace("ratelimit")
    verdict = await hit(counters, f"{scope}:{key}", parsed, cost)
    # The tightest verdict of this request goes in its answer's headers.
    current: Verdict | None = g.get("qapp_ratelimit")
    if current is None:
        # Only a request that was counted gets the headers: no hook runs for
        # the others.
        after_this_request(_with_headers)
    if current is None or verdict.remaining <= current.remaining:
        g.qapp_ratelimit = verdict
    if not verdict.allowed:
        metrics.rate_limited(scope)
        raise RateLimited(verdict)
    return verdict


async def refund(verdict: Verdict, *, store: str = "default", cost: int = 1) -> None:
    """Give back what :func:`check` counted for ``verdict``: for limits that count failures.

    E.g. a login counts every attempt before it checks the password, so that
    concurrent guesses cannot all get in before the first failure is counted,
    and gives the attempt back when the password was right.
    """
    counters = state_of().store(store).namespace("ratelimit")
    await uncount(counters, verdict, cost)


def rate_limit(
    limit: str | Limit,
    *,
    key: Callable[[], str] | None = None,
    scope: str | None = None,
    store: str = "default",
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Limit a route to ``limit`` per ``key()`` (default: :func:`~qapp.ext.client.client_key`).

    ``scope`` names the counter (default: the view's name), so that two
    routes sharing a scope share one budget.
    """
    parsed = parse_limit(limit)  # a bad limit fails at import, not at the first request
    who = key or client_key

    def decorator(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        name = scope or f"{view.__module__}.{view.__qualname__}"

        @functools.wraps(view)
        async def limited(*args: P.args, **kwargs: P.kwargs) -> R:
            await check(parsed, who(), scope=name, store=store)
            return await view(*args, **kwargs)

        return limited

    return decorator


async def _with_headers(response: Response | WerkzeugResponse) -> Response | WerkzeugResponse:
    """Put the tightest verdict of the request in its answer's ``RateLimit`` headers."""
    verdict: Verdict | None = g.get("qapp_ratelimit")
    if verdict is not None:
        _headers(response, verdict)
    return response


def install(app: Quart) -> None:
    """Answer :class:`RateLimited` as a JSON 429; :func:`check` puts ``RateLimit`` headers
    on the answers of the requests it counts."""

    @app.errorhandler(RateLimited)
    async def too_many(exc: RateLimited) -> Response:
        response = error_response(429, "too_many_requests", exc.description or "")
        response.headers["Retry-After"] = str(exc.verdict.retry_after)
        return response
