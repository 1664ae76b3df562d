"""Two more rows of the race lab: a session dict against an atomic session value, and
cache-aside against single flight. Also the refresh routes that the benchmark loads.

Both rows make the lab's point once more: cooperative yielding still races
without atomic operations.

**Session dict vs atomic session** (one client, one cookie, many concurrent
``POST``\\ s):

- ``POST /lab/session/naive`` keeps a counter in the session dict, the
  Flask-Session way: the dict is loaded whole when the request starts, the
  route sets ``session["lab_naive"] = session.get("lab_naive", 0) + 1``, and
  the dict is written back whole after the route. Requests that load the dict
  before another's write lands all write the same number: increments are lost.
- ``POST /lab/session/atomic`` is ``session.incr("lab_atomic")``: one atomic
  increment in the store, so 100 concurrent requests add exactly 100.
- ``GET /lab/session`` reads both; ``POST /lab/session/reset`` sets both to 0
  (and gives a client without a session its cookie).

**Cache-aside vs single flight** (many concurrent cold reads of one key):

- ``GET /lab/stampede/naive/<key>``: get, and on a miss compute (``LAB_WORK``
  seconds, 0.5 by default) and set. Every request that misses before the first
  set computes: a stampede.
- ``GET /lab/stampede/cached/<key>``: the same work under ``cached``: one
  computation across all workers, whoever asks.
- ``GET /lab/stampede/<strategy>/<key>/computations``: how often it ran.

Each run uses a fresh key. Computations are counted with ``incr`` in the
``lab`` namespace of the cache store, so the count itself cannot race; the
count, like the value, expires after ``LAB_TTL`` seconds. A request that may
compute a new key costs its client what a new memo key does: one of its
``MEMO_QUOTA``, the same budget (:func:`~qapp.service.limits.charge_new_work`).

**Refresh under load** (``GET /lab/refresh/<mode>``, for ``python -m bench``):
one ``cached`` value, ``LAB_REFRESH_WORK`` seconds (0.25) to compute and fresh
for ``LAB_REFRESH_TTL`` (2), loaded steadily across its expiries. ``expire``
lets it expire (callers wait for the recomputation), ``stale`` keeps it
``LAB_REFRESH_STALE`` seconds (30) more while one worker refreshes it, and
``early`` refreshes it before it expires (XFetch).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Literal, TypeAlias, cast

from pydantic import BaseModel
from quart import Blueprint, Quart, current_app
from quart.blueprints import BlueprintSetupState

from qapp.ext import Cached, cached, get_store, session
from qapp.service import apidoc, config
from qapp.service.apidoc import document_response
from qapp.service.errors import APIError
from qapp.service.limits import charge_new_work
from qapp.service.validation import check_key
from qapp.state import Store

bp = Blueprint("lab", __name__, url_prefix="/lab")

#: The per-session value of the atomic row (listed in ``Qapp(session_values=...)``).
SESSION_VALUE = "lab_atomic"
#: The session dict's key of the naive row.
DICT_KEY = "lab_naive"

#: The two ways to read a value that is expensive to compute.
STAMPEDE = ("naive", "cached")
#: The three ways the refresh route lets its value age.
REFRESH_MODES = ("expire", "stale", "early")

Mode: TypeAlias = Literal["expire", "stale", "early"]

#: Where each app keeps its ``cached`` functions, in ``app.extensions``.
EXTENSION = "qapp.lab"


@bp.record_once
def document_names(state: BlueprintSetupState) -> None:
    """Publish the strategy and mode names as the only values of their path parameters."""
    app = cast(Quart, state.app)
    apidoc.path_parameter(app, "strategy", {"type": "string", "enum": list(STAMPEDE)})
    apidoc.path_parameter(app, "mode", {"type": "string", "enum": list(REFRESH_MODES)})


class SessionCount(BaseModel):
    """One increment's number, and the worker (pid) that answered."""

    strategy: str
    value: int
    worker: int


class SessionCounts(BaseModel):
    """This client's two counters: the session dict's and the atomic one."""

    naive: int
    atomic: int


class StampedeAnswer(BaseModel):
    """A read of an expensive value: which computation made it, and who answered."""

    strategy: str
    key: str
    computation: int
    cached: bool
    worker: int


class Computations(BaseModel):
    """How many times a key's value has been computed, by every worker."""

    strategy: str
    key: str
    computations: int


class RefreshAnswer(BaseModel):
    """The refresh route's value: its computation, and whether it was stale or cached."""

    mode: str
    computation: int
    stale: bool
    cached: bool
    ttl: float
    work: float
    worker: int


# --- session dict vs atomic session ---------------------------------------------


def _counts(naive: Any, atomic: Any) -> dict[str, int]:
    return {
        "naive": naive if isinstance(naive, int) else 0,
        "atomic": atomic if isinstance(atomic, int) else 0,
    }


@bp.get("/session")
@document_response(SessionCounts, 200)
async def session_counts() -> dict[str, int]:
    """This client's two counters; 0 where it has none."""
    return _counts(session.get(DICT_KEY), await session.value(SESSION_VALUE))


@bp.post("/session/reset")
@document_response(SessionCounts, 200)
async def session_reset() -> dict[str, int]:
    """Set both counters to 0, creating the session (and its cookie) if needed."""
    session[DICT_KEY] = 0
    await session.set_value(SESSION_VALUE, 0)
    await session.save()
    return _counts(0, 0)


@bp.post("/session/naive")
@document_response(SessionCount, 200)
async def session_naive() -> dict[str, Any]:
    """Add one to the counter in the session dict, which is written back whole: loses updates."""
    value = session.get(DICT_KEY, 0) + 1
    # The whole dict, as loaded when this request began, goes back to the
    # store after the route: a write that landed meanwhile is overwritten.
    session[DICT_KEY] = value
    return {"strategy": "naive", "value": value, "worker": os.getpid()}


@bp.post("/session/atomic")
@document_response(SessionCount, 200)
async def session_atomic() -> dict[str, Any]:
    """Add one to the session's atomic value, in one store operation: loses nothing."""
    value = await session.incr(SESSION_VALUE)
    return {"strategy": "atomic", "value": value, "worker": os.getpid()}


# --- cache-aside vs single flight --------------------------------------------------


def _home() -> Store:
    """Where the lab keeps its values and counts: the ``lab`` namespace of the cache store."""
    return get_store("cache").namespace("lab")


async def work(strategy: str, key: str) -> dict[str, Any]:
    """The expensive computation: ``LAB_WORK`` seconds, counted atomically once done."""
    await asyncio.sleep(config.number("QAPP_LAB_WORK"))
    number = await _home().incr(f"count:{strategy}:{key}", ttl=config.number("QAPP_LAB_TTL"))
    return {"computation": number, "worker": os.getpid(), "computed_at": time.time()}


async def single_flight_value(key: str) -> dict[str, Any]:
    """:func:`work` for the ``cached`` row (decorated per app: see :func:`_flights`)."""
    return await work("cached", key)


async def refresh_value(mode: str) -> dict[str, Any]:
    """The refresh route's value: ``LAB_REFRESH_WORK`` seconds of work, numbered.

    The number comes from a counter of the mode's own (one of three keys, kept
    ``LAB_TTL`` after the last computation), not from ``cached``'s count, which
    goes with each expired value: the benchmark reads how many times the value
    was computed across many expiries.
    """
    await asyncio.sleep(config.number("QAPP_LAB_REFRESH_WORK"))
    store, counter, ttl = _home(), f"refresh:{mode}", config.number("QAPP_LAB_TTL")
    number = await store.incr(counter, ttl=ttl)
    await store.expire(counter, ttl)
    return {"computation": number, "worker": os.getpid(), "computed_at": time.time()}


def _flights() -> dict[str, Cached[[Any], dict[str, Any]]]:
    """This app's ``cached`` functions, made with its settings on first use."""
    app = current_app
    made: dict[str, Cached[[Any], dict[str, Any]]] | None = app.extensions.get(EXTENSION)
    if made is None:
        ttl = config.number("QAPP_LAB_REFRESH_TTL")
        made = {
            "cached": cached(ttl=config.number("QAPP_LAB_TTL"), namespace="lab")(
                single_flight_value
            ),
            "expire": cached(ttl=ttl, beta=0, namespace="lab.expire")(refresh_value),
            "stale": cached(
                ttl=ttl,
                stale=config.number("QAPP_LAB_REFRESH_STALE"),
                beta=0,
                namespace="lab.stale",
            )(refresh_value),
            "early": cached(ttl=ttl, namespace="lab.early")(refresh_value),
        }
        app.extensions[EXTENSION] = made
    return made


def _strategy(name: str) -> str:
    if name not in STAMPEDE:
        raise APIError(404, "unknown_strategy", f"no strategy {name!r}; valid: naive, cached")
    return name


@bp.get("/stampede/<strategy>/<key>")
@document_response(StampedeAnswer, 200)
async def stampede(strategy: str, key: str) -> dict[str, Any]:
    """Read ``key``'s expensive value: naive cache-aside, or single flight (``cached``)."""
    _strategy(strategy)
    check_key(key)
    if strategy == "cached":
        flight = _flights()["cached"]
        if not await flight.computations(key):
            await charge_new_work()
        info = await flight.get_with_info(key)
        value, fresh = info.value, not info.cached
    else:
        store = _home()
        value = await store.get(f"naive:{key}")
        fresh = value is None
        if value is None:
            await charge_new_work()
            value = await work("naive", key)
            await store.set(f"naive:{key}", value, ttl=config.number("QAPP_LAB_TTL"))
    return {
        "strategy": strategy,
        "key": key,
        "computation": value["computation"],
        "cached": not fresh,
        "worker": os.getpid(),
    }


@bp.get("/stampede/<strategy>/<key>/computations")
@document_response(Computations, 200)
async def computations(strategy: str, key: str) -> dict[str, Any]:
    """How many times ``key``'s value has been computed with ``strategy``, by every worker."""
    _strategy(strategy)
    check_key(key)
    count = await _home().get(f"count:{strategy}:{key}")
    return {"strategy": strategy, "key": key, "computations": count or 0}


# --- refresh under load (the benchmark's) ------------------------------------------


@bp.get("/refresh/<mode>")
@document_response(RefreshAnswer, 200)
async def refresh(mode: str) -> dict[str, Any]:
    """A ``cached`` value under steady load: let it expire, keep it stale, or refresh early."""
    if mode not in REFRESH_MODES:
        raise APIError(404, "unknown_mode", f"no mode {mode!r}; valid: expire, stale, early")
    info = await _flights()[mode].get_with_info(mode)
    return {
        "mode": mode,
        "computation": info.value.get("computation", info.computations),
        "stale": info.stale,
        "cached": info.cached,
        "ttl": config.number("QAPP_LAB_REFRESH_TTL"),
        "work": config.number("QAPP_LAB_REFRESH_WORK"),
        "worker": os.getpid(),
    }
