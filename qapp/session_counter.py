"""The session counter: per-client state that survives requests, kept server-side.

``GET /session/counter`` answers ``{"counter": n}`` (0 for a new client);
``POST /session/counter/inc``, ``/dec`` and ``/reset`` change it and answer
the new value.

The counter is a session-scoped key changed with the store's atomic
``incr``: 100 concurrent ``inc`` with one cookie add exactly 100, on any
number of workers. Reading the session, adding one and writing the session
back would lose most of them, as cookie sessions and flask-session do.

A client is its cookie. A client without one gets its session (and cookie)
from its first ``inc``, ``dec`` or ``reset``; requests it sends before that
answer arrives each start a session of their own, since nothing ties them
together. Send one request first, then fire the concurrent ones with the
cookie it set. ``GET`` never creates a session.
"""

from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint, current_app

from qapp import sessions
from qapp.apidoc import document_response
from qapp.state import get_store

bp = Blueprint("session_counter", __name__, url_prefix="/session/counter")

COUNTER = sessions.scoped("counter")


class SessionCounter(BaseModel):
    """This client's counter."""

    counter: int


@bp.get("")
@document_response(SessionCounter, 200)
async def read() -> dict[str, int]:
    """This client's counter; 0 if it has none yet."""
    key = await sessions.scoped_key(COUNTER, create=False)
    value = None if key is None else await get_store("session").get(key)
    return {"counter": value if isinstance(value, int) else 0}


async def _add(delta: int) -> dict[str, int]:
    key = await sessions.scoped_key(COUNTER, create=True)
    assert key is not None
    # The ttl applies when the increment creates the key; after that the
    # session renews it on each request, together with the session itself.
    ttl = current_app.config["SESSION_TTL"]
    return {"counter": await get_store("session").incr(key, delta, ttl=ttl)}


@bp.post("/inc")
@document_response(SessionCounter, 200)
async def inc() -> dict[str, int]:
    """Add one to this client's counter, atomically in the session store."""
    return await _add(1)


@bp.post("/dec")
@document_response(SessionCounter, 200)
async def dec() -> dict[str, int]:
    """Subtract one from this client's counter, atomically in the session store."""
    return await _add(-1)


@bp.post("/reset")
@document_response(SessionCounter, 200)
async def reset() -> dict[str, int]:
    """Set this client's counter to 0."""
    key = await sessions.scoped_key(COUNTER, create=True)
    assert key is not None
    await get_store("session").set(key, 0, ttl=current_app.config["SESSION_TTL"])
    return {"counter": 0}
