"""A Redis that dies mid-load: every operation fails fast with StoreUnavailable,
and the same store object works again once Redis is back on its address."""

from __future__ import annotations

import asyncio
import time

import pytest

from qapp.state import StoreUnavailable, open_store
from qapp.testing import RedisServer

pytestmark = pytest.mark.slow

CLIENTS = 200


async def test_redis_killed_mid_load_then_back() -> None:
    """Killed under 200 concurrent clients, Redis costs only StoreUnavailable; recovery < 2 s."""
    with RedisServer() as server:
        store = await open_store(server.url)
        stop = asyncio.Event()
        outcomes: list[str] = []

        async def client() -> None:
            while not stop.is_set():
                try:
                    await store.incr("c")
                    outcomes.append("ok")
                except StoreUnavailable:
                    outcomes.append("unavailable")
                    await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(client()) for _ in range(CLIENTS)]
        await asyncio.sleep(0.5)
        server.kill()
        killed_at = len(outcomes)
        await asyncio.sleep(0.5)
        failing = outcomes[killed_at:]
        # Any other exception would have ended a task: all must still run.
        assert not any(task.done() for task in tasks)
        assert "unavailable" in failing

        server.start()
        began = time.monotonic()
        async with asyncio.timeout(10):
            while True:
                try:
                    first = await store.incr("after")
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.02)
        recovery = time.monotonic() - began
        # 500 more on top of the 200 clients: the pool must serve every waiter
        # in turn, none starved past its timeout.
        values = [first, *await asyncio.gather(*(store.incr("after") for _ in range(500)))]
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
        await store.close()

    assert outcomes[:killed_at].count("ok") > 0
    assert recovery < 2.0
    assert sorted(values) == list(range(1, 502))
