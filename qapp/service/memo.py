"""A memo on ``cached``: an expensive value computed once, however many ask at once.

``GET /memo/<key>`` answers ``{"key", "value", "cached", "computations"}``.
The value takes ``MEMO_WORK`` seconds to compute (0.2 by default: simulated
work, an ``asyncio.sleep``), is kept in the cache store for ``MEMO_TTL``
seconds (300 by default) and is then computed afresh on demand.

The route is the library's ``cached`` (:mod:`qapp.store.flight`, through
:func:`qapp.ext.cached`) and nothing else. Single flight, across every worker
of every host that shares the store:

1. A kept value is answered at once (``cached: true``).
2. Otherwise exactly one request computes: the one that takes the store lock
   of the key. Its lease (``MEMO_LEASE``, 5 s) is renewed while the work
   runs, so work longer than the lease is still done once, and a worker that
   dies frees the lock within one lease for a waiter to take over.
3. Everyone else waits for the value, woken when it lands (Redis pub/sub) or
   polling (SQLite); a waiter that sees none within ``MEMO_WAIT`` seconds (8 s)
   gets a 503 with ``Retry-After``.

``computations`` counts the computations of the key across all workers,
atomically in the store: each answer carries the number of the computation
that made its value. ``cached`` is false only in the answer of the request
that computed. ``MEMO_STALE`` (0 by default) keeps a value that many seconds
past its ttl, answered at once while one worker recomputes it.

Each setting is a config key or a ``QAPP_MEMO_*`` environment variable.
Keys, in the ``memo`` namespace of the cache store: ``v:<k>`` (the value),
``n:<k>`` (the count), and the lock ``<k>``, where ``<k>`` is
:meth:`~qapp.store.flight.Cached.key` of ``compute(key)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from typing import Any

from pydantic import BaseModel
from quart import Blueprint, Quart, current_app

from qapp.ext import Cached, cached
from qapp.service import config
from qapp.service.apidoc import document_response
from qapp.service.limits import charge_new_work
from qapp.service.validation import check_key

bp = Blueprint("memo", __name__, url_prefix="/memo")

#: Where each app keeps its memo (a :class:`~qapp.store.flight.Cached`) in ``app.extensions``.
EXTENSION = "qapp.memo"


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


async def compute(key: str) -> dict[str, Any]:
    """The expensive value of ``key``: simulated slow work, then a digest."""
    await asyncio.sleep(config.number("QAPP_MEMO_WORK"))
    return {
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
        "worker": os.getpid(),
        "computed_at": time.time(),
    }


def memo_of(app: Quart | None = None) -> Cached[[str], dict[str, Any]]:
    """The app's memo: :func:`compute` under ``cached``, with the app's settings."""
    target = app or current_app
    memo: Cached[[str], dict[str, Any]] | None = target.extensions.get(EXTENSION)
    if memo is None:
        memo = cached(
            ttl=config.number("QAPP_MEMO_TTL", target),
            stale=config.number("QAPP_MEMO_STALE", target),
            lease=config.number("QAPP_MEMO_LEASE", target),
            wait=config.number("QAPP_MEMO_WAIT", target),
            namespace="memo",
        )(compute)
        target.extensions[EXTENSION] = memo
    return memo


@bp.get("/<path:key>")
@document_response(MemoAnswer, 200)
async def memo(key: str) -> dict[str, Any]:
    """The memoised value of ``key``, computed by one request across all workers."""
    check_key(key)
    memo = memo_of()
    if not await memo.computations(key):
        # A key never computed (or long forgotten) costs a computation: each
        # client may ask for so many new ones (MEMO_QUOTA), so that one
        # client cannot run the work for thousands of made-up keys.
        await charge_new_work()
    info = await memo.get_with_info(key)
    return {
        "key": key,
        "value": info.value,
        "cached": info.cached,
        "computations": info.computations,
    }
