"""The race lab's routes: ``/counter/<strategy>`` for each of :mod:`qapp.counters`.

``POST`` increments and answers this request's number, ``GET`` the current
value, ``DELETE`` resets it to 0. Every answer names the worker (pid) that
served it, so a client can tell a shared counter from one that each worker
keeps alone. ``DELETE`` says which it reset: ``"scope": "worker"`` resets only
the worker that answered.
"""

from __future__ import annotations

import os
from typing import Any

from quart import Blueprint, current_app, request

from qapp.counters import STRATEGIES, Strategy, WorkerCounters
from qapp.errors import APIError
from qapp.state import get_store

bp = Blueprint("race", __name__)

#: Where each worker keeps its :class:`WorkerCounters` in ``app.extensions``.
EXTENSION = "qapp.counters"


@bp.before_app_serving
async def open_worker_counters() -> None:
    """Give this worker its own counters, inside its own event loop."""
    current_app.extensions[EXTENSION] = WorkerCounters()


def _mine() -> WorkerCounters:
    counters: WorkerCounters = current_app.extensions[EXTENSION]
    return counters


def _strategy(name: str) -> Strategy:
    strategy = STRATEGIES.get(name)
    if strategy is None:
        valid = ", ".join(STRATEGIES)
        # Echo the name back with repr so that odd input stays readable.
        raise APIError(404, "unknown_strategy", f"no strategy {name!r}; valid: {valid}")
    return strategy


async def _refuse_bad_body() -> None:
    """Refuse a body the service would refuse anywhere, before anything is counted.

    An increment takes no input, but a body must still be within the size
    limit (Quart answers 413 past ``MAX_CONTENT_LENGTH`` while reading it) and
    be JSON (415 otherwise), as on every state-changing route.
    """
    body = await request.get_data()
    if body and request.mimetype != "application/json":
        raise APIError(415, "unsupported_media_type", "a request body must be application/json")


def _answer(strategy: Strategy, value: int) -> dict[str, Any]:
    return {"strategy": strategy.name, "value": value, "worker": os.getpid()}


@bp.post("/counter/<name>")
async def increment(name: str) -> dict[str, Any]:
    """Increment the counter with this strategy and answer this request's number."""
    strategy = _strategy(name)
    await _refuse_bad_body()
    return _answer(strategy, await strategy.increment(_mine(), get_store()))


@bp.get("/counter/<name>")
async def current(name: str) -> dict[str, Any]:
    """Answer the counter's current value as this worker sees it."""
    strategy = _strategy(name)
    return _answer(strategy, await strategy.current(_mine(), get_store()))


@bp.delete("/counter/<name>")
async def reset(name: str) -> dict[str, Any]:
    """Reset the counter to 0 and say whether that was this worker's or the shared one."""
    strategy = _strategy(name)
    await strategy.reset(_mine(), get_store())
    return {**_answer(strategy, 0), "scope": strategy.scope}
