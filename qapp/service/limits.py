"""The service's abuse limits, applied where a route spends something a client could flood.

Each limit is a setting (see :mod:`qapp.service.config`) counted in the
default store with :func:`qapp.ext.check_rate_limit`, so it holds across
every worker and host that share the store. A setting of "off" turns it off.
"""

from __future__ import annotations

from quart import current_app

from qapp.ext import check_rate_limit
from qapp.service.config import limit_setting

__all__ = ["throttle"]


async def throttle(setting: str, key: str, scope: str) -> None:
    """Count one attempt of ``key`` against the limit in ``setting``: 429 once it is spent."""
    limit = limit_setting(current_app.config.get(setting))
    if limit is not None:
        await check_rate_limit(limit, key, scope=scope)
