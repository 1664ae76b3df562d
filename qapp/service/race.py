"""The race lab's routes: ``/counter/<strategy>`` for each of :mod:`qapp.counters`.

``POST`` increments and answers this request's number, ``GET`` the current
value, ``DELETE`` resets it to 0. Every answer names the worker (pid) that
served it, so a client can tell a shared counter from one that each worker
keeps alone. ``DELETE`` says which it reset: ``"scope": "worker"`` resets only
the worker that answered.
"""

from __future__ import annotations

import os
from typing import Any, cast

from pydantic import BaseModel
from quart import Blueprint, Quart, current_app
from quart.blueprints import BlueprintSetupState

from qapp.ext import get_store
from qapp.service import apidoc
from qapp.service.counters import STRATEGIES, Strategy, WorkerCounters
from qapp.service.errors import APIError
from qapp.state import Store

bp = Blueprint("race", __name__)


@bp.record_once
def document_strategies(state: BlueprintSetupState) -> None:
    """Publish the strategy names as the only values of ``<name>``."""
    apidoc.path_parameter(
        cast(Quart, state.app), "name", {"type": "string", "enum": list(STRATEGIES)}
    )


class CounterAnswer(BaseModel):
    """A counter's value, and the worker (pid) that answered."""

    strategy: str
    value: int
    worker: int


class CounterReset(CounterAnswer):
    """A reset counter: ``scope`` is ``worker`` (this worker's own) or ``shared``."""

    scope: str


#: Where each worker keeps its :class:`WorkerCounters` in ``app.extensions``.
EXTENSION = "qapp.counters"


@bp.before_app_serving
async def open_worker_counters() -> None:
    """Give this worker its own counters, inside its own event loop."""
    current_app.extensions[EXTENSION] = WorkerCounters()


def _mine() -> WorkerCounters:
    counters: WorkerCounters = current_app.extensions[EXTENSION]
    return counters


def _counters() -> Store:
    """Where the shared strategies keep their numbers: the default store's ``counter`` namespace."""
    return get_store().namespace("counter")


def _strategy(name: str) -> Strategy:
    strategy = STRATEGIES.get(name)
    if strategy is None:
        valid = ", ".join(STRATEGIES)
        # Echo the name back with repr so that odd input stays readable.
        raise APIError(404, "unknown_strategy", f"no strategy {name!r}; valid: {valid}")
    return strategy


def _answer(strategy: Strategy, value: int) -> dict[str, Any]:
    return {"strategy": strategy.name, "value": value, "worker": os.getpid()}


@bp.post("/counter/<name>")
@apidoc.document_response(CounterAnswer, 200)
async def increment(name: str) -> dict[str, Any]:
    """Increment the counter with this strategy and answer this request's number."""
    strategy = _strategy(name)
    return _answer(strategy, await strategy.increment(_mine(), _counters()))


@bp.get("/counter/<name>")
@apidoc.document_response(CounterAnswer, 200)
async def current(name: str) -> dict[str, Any]:
    """Answer the counter's current value as this worker sees it."""
    strategy = _strategy(name)
    return _answer(strategy, await strategy.current(_mine(), _counters()))


@bp.delete("/counter/<name>")
@apidoc.document_response(CounterReset, 200)
async def reset(name: str) -> dict[str, Any]:
    """Reset the counter to 0 and say whether that was this worker's or the shared one."""
    strategy = _strategy(name)
    await strategy.reset(_mine(), _counters())
    return {**_answer(strategy, 0), "scope": strategy.scope}
