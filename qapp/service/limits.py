"""The service's abuse limits, applied where a route spends something a client could flood.

Each limit is a setting (``QAPP_<NAME>``, see :mod:`qapp.service.config`) counted in the
default store with :func:`qapp.ext.check_rate_limit`, so it holds across
every worker and host that share the store. A setting of "off" turns it off.
"""

from __future__ import annotations

from quart import current_app

from qapp.ext import check_rate_limit

__all__ = ["throttle"]


async def throttle(setting: str, key: str, scope: str) -> None:
    """Count one attempt of ``key`` against the limit ``QAPP_<setting>``: 429 once it is spent."""
    limit = current_app.config.get(f"QAPP_{setting}")
    if limit is not None:
        await check_rate_limit(limit, key, scope=scope)
