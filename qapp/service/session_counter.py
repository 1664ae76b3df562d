"""The session counter: per-client state that survives requests, kept server-side.

``GET /session/counter`` answers ``{"counter": n}`` (0 for a new client);
``POST /session/counter/inc``, ``/dec`` and ``/reset`` change it and answer
the new value.

The counter is a per-session value changed with the store's atomic
``incr`` (``session.incr("counter")``): 100 concurrent ``inc`` with one
cookie add exactly 100, on any number of workers. Reading the session,
adding one and writing the session back would lose most of them, as cookie
sessions and flask-session do.

A client is its cookie. A client without one gets its session (and cookie)
from its first ``inc``, ``dec`` or ``reset``; requests it sends before that
answer arrives each start a session of their own, since nothing ties them
together. Send one request first, then fire the concurrent ones with the
cookie it set. ``GET`` never creates a session.
"""

from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint

from qapp.ext import session
from qapp.service.apidoc import document_response

bp = Blueprint("session_counter", __name__, url_prefix="/session/counter")

#: The per-session value that holds the counter (listed in ``Qapp(session_values=...)``).
COUNTER = "counter"


class SessionCounter(BaseModel):
    """This client's counter."""

    counter: int


@bp.get("")
@document_response(SessionCounter, 200)
async def read() -> dict[str, int]:
    """This client's counter; 0 if it has none yet."""
    value = await session.value(COUNTER)
    return {"counter": value if isinstance(value, int) else 0}


@bp.post("/inc")
@document_response(SessionCounter, 200)
async def inc() -> dict[str, int]:
    """Add one to this client's counter, atomically in the session store."""
    return {"counter": await session.incr(COUNTER)}


@bp.post("/dec")
@document_response(SessionCounter, 200)
async def dec() -> dict[str, int]:
    """Subtract one from this client's counter, atomically in the session store."""
    return {"counter": await session.incr(COUNTER, -1)}


@bp.post("/reset")
@document_response(SessionCounter, 200)
async def reset() -> dict[str, int]:
    """Set this client's counter to 0."""
    await session.set_value(COUNTER, 0)
    return {"counter": 0}
