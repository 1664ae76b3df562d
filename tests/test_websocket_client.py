"""The client address in a websocket handler: read from the handshake, as for a request."""

from __future__ import annotations

from pathlib import Path

import pytest
from quart import Quart, websocket

from qapp.ext import Qapp, client_address, client_key

pytestmark = pytest.mark.fast


async def test_client_key_in_a_websocket_handler(tmp_path: Path) -> None:
    """client_address and client_key work in a websocket, through a trusted proxy's header."""
    app = Quart(__name__, instance_path=str(tmp_path))
    app.config.update(QAPP_STORE_URL="memory://", QAPP_TRUSTED_PROXIES="127.0.0.1")
    Qapp(app)

    @app.websocket("/ws")
    async def who() -> None:
        await websocket.send_json({"address": client_address(), "key": client_key()})

    async with app.test_app():
        client = app.test_client()
        headers = {"X-Forwarded-For": "2001:db8:7:8::42"}
        peer = {"client": ("127.0.0.1", 40000)}
        async with client.websocket("/ws", headers=headers, scope_base=peer) as ws:
            answer = await ws.receive_json()
    assert answer == {"address": "2001:db8:7:8::42", "key": "2001:db8:7:8::/64"}
