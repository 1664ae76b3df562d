"""qapp's service with cProfile on in each worker, for :mod:`bench.hotspots`.

The profiler starts at ``GET /_bench/profile/start`` (after a warm-up, so
that pools are full) and stops at ``GET /_bench/profile``, which writes the
worker's stats to ``$BENCH_PROFILE_DIR/<pid>.prof`` and answers its path.
Everything else goes to qapp's own app unchanged.
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
START_PATH = "/_bench/profile/start"
_profile = cProfile.Profile()
_running = False


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """qapp's service, profiled between the two paths."""
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
    if scope["type"] == "http" and scope["path"] == START_PATH:
        _running = True
        _profile.enable()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await service(scope, receive, send)
