"""The service's abuse limits, applied where a route spends something a client could flood.

Each limit is a setting (``QAPP_<NAME>``, see :mod:`qapp.service.config`) counted in the
default store with :func:`qapp.ext.check_rate_limit`, so it holds across
every worker and host that share the store. A setting of "off" turns it off.

A limit that should count failures only (a login's) counts every attempt
with :func:`throttle` before the work, and hands the attempts that
succeeded back with :func:`give_back`. Counting after the work instead
would let every concurrent attempt in before the first failure was counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from quart import current_app

from qapp.ext import check_rate_limit, client_key, refund_rate_limit
from qapp.state import ConfigurationError
from qapp.store.ratelimit import Limit, Verdict, parse_limit

__all__ = [
    "charge_new_work",
    "give_back",
    "lockout_risk",
    "login_limits",
    "one_client_share",
    "throttle",
]


async def throttle(setting: str, key: str, scope: str) -> Verdict | None:
    """Count one attempt of ``key`` against the limit in ``setting``: 429 once it is spent.

    Returns what was counted, for :func:`give_back`; None when the limit is off.
    """
    limit = current_app.config.get(f"QAPP_{setting}")
    if limit is None:
        return None
    # Fixed windows: the lockout arithmetic below counts aligned windows.
    return await check_rate_limit(limit, key, scope=scope, strategy="fixed")


async def give_back(*counted: Verdict | None) -> None:
    """Take back attempts that :func:`throttle` counted (those of limits that were on)."""
    for verdict in counted:
        if verdict is not None:
            await refund_rate_limit(verdict)


def _windows_overlapping(inner: Limit, outer: Limit) -> int:
    """How many windows of ``inner`` one window of ``outer`` can overlap.

    Both are aligned on the epoch, so with ``g`` the greatest common divisor
    of the periods, an outer window meets at most ``ceil((outer - g) / inner) + 1``
    inner ones: 15 one-minute windows in a quarter of an hour, 1 quarter in a minute.
    """
    common = math.gcd(round(inner.period), round(outer.period)) or 1
    return math.ceil((outer.period - common) / inner.period) + 1


def one_client_share(ceiling: Limit, *per_client: Limit) -> int | None:
    """The most attempts one client address can add to an account's ceiling in one window.

    ``per_client`` are the limits that bound one client's attempts at one
    account (per account and client, per client); the tightest wins. None:
    nothing bounds them.
    """
    shares = [limit.count * _windows_overlapping(limit, ceiling) for limit in per_client]
    return min(shares) if shares else None


def login_limits(config: Mapping[str, Any]) -> dict[str, Limit | None]:
    """The three login limits in ``config``, parsed; None for one that is off.

    Raises:
        ConfigurationError: a limit that is not a limit, naming its setting.
    """
    limits: dict[str, Limit | None] = {}
    for key in ("LOGIN_LIMIT", "LOGIN_ACCOUNT_LIMIT", "LOGIN_CLIENT_LIMIT"):
        text = config.get(f"QAPP_{key}")
        try:
            limits[key] = None if text is None else parse_limit(text)
        except ConfigurationError as exc:
            raise ConfigurationError(f"QAPP_{key}: {exc}") from None
    return limits


def lockout_risk(config: Mapping[str, Any]) -> str | None:
    """A warning if one client alone can spend an account's ceiling, locking its owner out.

    The ceiling (``LOGIN_ACCOUNT_LIMIT``) refuses every client once spent,
    the owner's too; it exists for guesses spread over many addresses. If
    one address can spend it, the per-account-and-client limit protects
    nobody.
    """
    limits = login_limits(config)
    ceiling = limits["LOGIN_ACCOUNT_LIMIT"]
    if ceiling is None:
        return None
    per_client = [
        limit for key in ("LOGIN_LIMIT", "LOGIN_CLIENT_LIMIT") if (limit := limits[key]) is not None
    ]
    share = one_client_share(ceiling, *per_client)
    if share is not None and share < ceiling.count:
        return None
    return (
        f"one client can make {share or 'unlimited'} login attempts at one account per window of "
        f"QAPP_LOGIN_ACCOUNT_LIMIT ({ceiling.count}): one stranger can lock the owner out; "
        "make QAPP_LOGIN_LIMIT tighter or QAPP_LOGIN_ACCOUNT_LIMIT larger"
    )


async def charge_new_work() -> None:
    """Count a request that may compute a key never computed (or forgotten) against its client.

    The memo and the lab's stampede rows share one budget per client,
    ``QAPP_MEMO_QUOTA``: each new key costs a computation and stored entries,
    and no route is a side door around the others' quota. 429 once it is spent.
    """
    await throttle("MEMO_QUOTA", client_key(), "memo-new")
