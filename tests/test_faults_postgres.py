"""PostgreSQL dies under HTTP load and comes back: 200 or a JSON 503, never a hang, quick recovery.

Unlike a Redis without persistence, PostgreSQL keeps every committed
increment across the kill: the numbers carry on, none handed out twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from qapp.testing import HypercornServer, PostgresServer
from tests.loadgen import Load, http, send, values
from tests.test_faults_redis import CLIENTS, RECOVERY_BOUND, check_503

pytestmark = pytest.mark.slow


async def test_postgres_killed_under_http_load_then_back(tmp_path: Path) -> None:
    """300 clients on 4 workers get only 200s and JSON 503s across a PostgreSQL kill and restart."""
    with PostgresServer() as postgres:
        env = {"QAPP_STORE_URL": postgres.url, "QAPP_INSTANCE_PATH": str(tmp_path)}
        with HypercornServer(workers=4, env=env) as web:
            async with http(web.url, CLIENTS) as client:
                load = Load(client, "POST", "/counter/atomic", CLIENTS)
                load.start()
                await load.wait_for(1000)
                steady = time.monotonic()
                await load.wait_for(len(load.answers) + 500)

                postgres.kill()
                killed = time.monotonic()
                await asyncio.sleep(1.0)
                # The server may accept connections before start() returns.
                restarting = time.monotonic()
                postgres.start()
                back = time.monotonic()
                await asyncio.sleep(RECOVERY_BOUND + 1.5)
                answers = await load.stop()
                final = await send(client, "GET", "/counter/atomic")

    # As for Redis, the cold start's first 1000 answers are left out.
    everything, answers = answers, [a for a in answers if a.sent >= steady]
    assert [(a.sent - killed, a.error) for a in answers if a.error] == []
    assert Counter(a.status for a in answers).keys() <= {200, 503}
    for answer in answers:
        if answer.status == 503:
            check_503(answer)
    during = [a for a in answers if killed + 0.5 < a.answered < restarting]
    assert during
    assert not any(a.ok for a in during)

    recovered = min(a.answered for a in answers if a.ok and a.answered > back)
    recovery = recovered - back
    late = [a for a in answers if a.sent > back + RECOVERY_BOUND]
    assert recovery < RECOVERY_BOUND
    assert late
    assert all(a.ok for a in late)

    # Every number handed out, before and after the kill, once: committed
    # increments survived it, and the counter ends where the answers end.
    handed_out = values(everything)
    assert len(handed_out) == len(set(handed_out))
    assert final.status == 200
    assert final.body["value"] == max(handed_out)
    ok = sum(a.ok for a in answers)
    print(
        f"\npostgres outage: {len(answers)} requests, {ok} x 200, {len(answers) - ok} x 503; "
        f"recovery {recovery:.3f} s; {len(handed_out)} numbers, 0 repeated"
    )
