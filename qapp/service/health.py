"""``/health``: is this worker up, and can it reach every store?"""

from __future__ import annotations

import logging
import os
from typing import Any

from pydantic import BaseModel
from quart import Blueprint, Response, jsonify

from qapp.ext import RETRY_AFTER, state_of
from qapp.service.apidoc import document_response
from qapp.state import StoreUnavailable

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


class HealthAnswer(BaseModel):
    """Every store answers; ``warning`` says when the store is this worker's own."""

    status: str
    worker: int
    store: str
    warning: str | None = None


class HealthDown(HealthAnswer):
    """A store cannot be reached: the health answer with an error code and message."""

    error: str
    message: str


@bp.get("/health")
@document_response(HealthAnswer, 200)
@document_response(HealthDown, 503)
async def health() -> tuple[Response, int, dict[str, str]] | dict[str, Any]:
    """Answer 200 if every configured store answers, else a JSON 503."""
    state = state_of()
    main = state.store()
    body: dict[str, Any] = {"status": "ok", "worker": os.getpid(), "store": main.name}
    if main.scope == "process":
        body["warning"] = "memory store: each worker has its own copy; shared state is not shared"
    try:
        # Each distinct store once (names may share one).
        for store in state.distinct_stores():
            await store.ping()
    except StoreUnavailable as exc:
        # The detail (paths, hosts) is for the log, not for anyone who asks.
        log.warning("health: %s", exc)
        body.update(
            status="unavailable", error="store_unavailable", message="a store cannot be reached"
        )
        return jsonify(body), 503, {"Retry-After": str(RETRY_AFTER)}
    return body
