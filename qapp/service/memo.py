"""A memo with single flight: an expensive value computed once, however many ask at once.

``GET /memo/<key>`` answers ``{"key", "value", "cached", "computations"}``.
The value takes ``MEMO_WORK`` seconds to compute (0.2 by default: simulated
work, an ``asyncio.sleep``), is kept in the cache store for ``MEMO_TTL``
seconds (300 by default) and is then computed afresh on demand.

Single flight, across every worker that shares the store:

1. A cached value is answered at once (``cached: true``).
2. Otherwise the request tries, without waiting, to take the store lock
   ``memo:<key>``. Exactly one request gets it; it checks the cache once
   more (the value may have landed meanwhile), computes, counts the
   computation with ``incr``, stores the value and releases the lock.
3. Everyone else polls the cache until the value appears. The lock has a
   lease (``MEMO_LEASE``, 5 s), so if the computing worker dies a waiter
   takes over once it lapses; a waiter that sees no value within
   ``MEMO_WAIT`` seconds (8 s) gets a 503 with ``Retry-After``.

The guard is the store's lock rather than a key set with ``add`` because a
lock is released by token: a computation that outlives its lease, and
whose lock a waiter has taken over meanwhile, cannot free the newer
holder's lock on its way out and let a third computation start.

Keys, in the ``memo`` namespace of the cache store: ``value:<key>`` and
``count:<key>`` (the total number of computations, never expiring); the
lock is ``<key>``.

``cached`` is false only in the answer of the request that computed.
The lease is many times the work: only a computation that outlives it can
overlap a second one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from typing import Any

from pydantic import BaseModel
from quart import Blueprint, current_app

from qapp.ext import get_store
from qapp.service.apidoc import document_response
from qapp.service.errors import APIError
from qapp.service.validation import check_key
from qapp.state import LockTimeout, Store

bp = Blueprint("memo", __name__, url_prefix="/memo")

#: Defaults of the config keys that tune the memo (seconds).
DEFAULTS: dict[str, float] = {
    "MEMO_WORK": 0.2,
    "MEMO_TTL": 300.0,
    "MEMO_LEASE": 5.0,
    "MEMO_WAIT": 8.0,
}


class MemoValue(BaseModel):
    """The expensive value: a digest of the key, who computed it and when."""

    sha256: str
    worker: int
    computed_at: float


class MemoAnswer(BaseModel):
    """A memoised value; ``cached`` is false only in the answer that computed it."""

    key: str
    value: MemoValue
    cached: bool
    computations: int


def _setting(name: str) -> float:
    value: float = current_app.config.get(name, DEFAULTS[name])
    return value


async def compute(key: str) -> dict[str, Any]:
    """The expensive value of ``key``: simulated slow work, then a digest."""
    await asyncio.sleep(_setting("MEMO_WORK"))
    return {
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
        "worker": os.getpid(),
        "computed_at": time.time(),
    }


async def _answer(store: Store, key: str, value: Any, cached: bool) -> dict[str, Any]:
    computations = await store.get(f"count:{key}")
    return {"key": key, "value": value, "cached": cached, "computations": computations or 0}


async def _compute(store: Store, key: str) -> dict[str, Any]:
    """Compute, count and cache the value of ``key``; the caller holds its lock."""
    # Another request may have computed and released between our miss and our lock.
    hit = await store.get(f"value:{key}")
    if isinstance(hit, dict):
        return await _answer(store, key, hit["value"], cached=True)
    value = await compute(key)
    computations = await store.incr(f"count:{key}")
    await store.set(f"value:{key}", {"value": value}, ttl=_setting("MEMO_TTL"))
    return {"key": key, "value": value, "cached": False, "computations": computations}


@bp.get("/<path:key>")
@document_response(MemoAnswer, 200)
async def memo(key: str) -> dict[str, Any]:
    """The memoised value of ``key``, computed by one request across all workers."""
    check_key(key)
    store = get_store("cache").namespace("memo")
    deadline = time.monotonic() + _setting("MEMO_WAIT")
    delay = 0.005
    while True:
        hit = await store.get(f"value:{key}")
        if isinstance(hit, dict):
            return await _answer(store, key, hit["value"], cached=True)
        # wait=0: one try. The lock is released on the way out even when the
        # client goes away mid-computation, so waiters need not sit out the lease.
        # Only taking the lock raises LockTimeout; _compute never does.
        try:
            async with store.lock(key, timeout=_setting("MEMO_LEASE"), wait=0):
                return await _compute(store, key)
        except LockTimeout:
            pass  # another request computes; wait for its value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise APIError(503, "busy", f"the value of {key!r} is still being computed; retry")
        # Jittered backoff: many waiters must not poll the store in step.
        await asyncio.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
        delay = min(delay * 2, 0.05)
