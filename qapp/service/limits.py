"""The service's abuse limits, applied where a route spends something a client could flood.

Each limit is a setting (``QAPP_<NAME>``, see :mod:`qapp.service.config`) counted in the
default store with :func:`qapp.ext.check_rate_limit`, so it holds across
every worker and host that share the store. A setting of "off" turns it off.
"""

from __future__ import annotations

from quart import current_app

from qapp.ext import check_rate_limit, client_address

__all__ = ["charge_new_work", "throttle"]


async def throttle(setting: str, key: str, scope: str) -> None:
    """Count one attempt of ``key`` against the limit ``QAPP_<setting>``: 429 once it is spent."""
    limit = current_app.config.get(f"QAPP_{setting}")
    if limit is not None:
        await check_rate_limit(limit, key, scope=scope)


async def charge_new_work() -> None:
    """Count a request that may compute a key never computed (or forgotten) against its client.

    The memo and the lab's stampede rows share one budget per client address,
    ``QAPP_MEMO_QUOTA``: each new key costs a computation and stored entries,
    and no route is a side door around the others' quota. 429 once it is spent.
    """
    await throttle("MEMO_QUOTA", client_address(), "memo-new")
