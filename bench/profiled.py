"""qapp's service with cProfile on in each worker, for :mod:`bench.hotspots`.

The profiler starts with the first request a worker serves (not at import,
which the serving parent does too) and stops at ``GET /_bench/profile``,
which writes the worker's stats to ``$BENCH_PROFILE_DIR/<pid>.prof`` and
answers its path. Everything else goes to qapp's own app unchanged.
"""

from __future__ import annotations

import cProfile
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from qapp import asgi

#: The service, called as any ASGI app (its own signature names Quart's event types).
service: Any = asgi.app

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PROFILE_PATH = "/_bench/profile"
_profile = cProfile.Profile()
_running = False


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """qapp's service, profiled from this worker's first request on."""
    global _running
    if scope["type"] == "http" and scope["path"] == PROFILE_PATH:
        _profile.disable()
        _running = False
        path = Path(os.environ["BENCH_PROFILE_DIR"]) / f"{os.getpid()}.prof"
        _profile.dump_stats(path)
        body = json.dumps({"path": str(path)}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] == "http" and not _running:
        _running = True
        _profile.enable()
    await service(scope, receive, send)
