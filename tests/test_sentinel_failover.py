"""Redis Sentinel fails over under HTTP load: 200 or a JSON 503, never a hang, serving again
within seconds of the promotion, and in durable mode no number handed out twice.

The runs are ``qapp race --failover``'s (:mod:`qapp.tools.failover`): a master
with two replicas behind a relay that holds replication back, three
sentinels, 4 qapp workers, 200 clients on ``POST /counter/atomic``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from harness.topologies import RedisSentinel
from qapp.testing import HypercornServer
from qapp.tools.failover import MODES, REQUEST_TIMEOUT, FailoverRun, run_failover

# 200 clients against 4 workers, a master, 2 replicas and 3 sentinels: on 2
# cores, timings mean something only with the machine to themselves.
pytestmark = [pytest.mark.slow, pytest.mark.serial]

#: Seconds after the promotion by which qapp must serve again (issue 14).
RECOVERY_BOUND = 10.0


@pytest.fixture(scope="module")
def runs() -> dict[str, FailoverRun]:
    """One failover run per mode, plain then durable, each on a topology of its own."""
    done = {mode: run_failover(mode, clients=200, workers=4, hold=2.0) for mode in MODES}
    for run in done.values():
        print(f"\nfailover {run.as_dict()}")
    return done


@pytest.mark.parametrize("mode", list(MODES))
def test_every_answer_is_200_or_json_503(runs: dict[str, FailoverRun], mode: str) -> None:
    """Across the kill and the promotion every request got a 200 or a JSON 503 with
    Retry-After, and none took as long as the client's timeout."""
    run = runs[mode]
    assert [r.error for r in run.replies if r.status == 0] == []
    assert set(run.statuses) <= {200, 503}
    assert all(r.well_formed for r in run.replies if r.status == 503)
    assert run.slowest < REQUEST_TIMEOUT
    # The failover was felt: requests failed while no master was known.
    assert run.statuses[503] > 0


@pytest.mark.parametrize("mode", list(MODES))
def test_serving_resumes_soon_after_the_promotion(runs: dict[str, FailoverRun], mode: str) -> None:
    """qapp serves 200s again within 10 s of Sentinel's promotion, without a restart."""
    run = runs[mode]
    assert run.recovery is not None
    assert run.recovery < RECOVERY_BOUND
    late = [r for r in run.replies if r.sent > run.promoted + RECOVERY_BOUND]
    assert all(r.status == 200 for r in late)


def test_durable_mode_hands_no_number_out_twice(runs: dict[str, FailoverRun]) -> None:
    """With wait_replicas=1 no number is handed out twice across the failover; plain mode's
    repeats (the increments only the dead master had) are printed for the docs."""
    durable, plain = runs["durable"], runs["plain"]
    print(f"\nrepeated: plain {plain.repeated}, durable {durable.repeated}")
    assert durable.repeated == 0
    # The hold made the window real: increments sent while no replica took the
    # stream were refused, and none was answered 200 before a new master was up.
    # (One sent before the hold may be confirmed and answered well after it on a
    # busy machine: its write had reached the replicas.)
    held = [r for r in durable.replies if durable.held < r.sent < durable.killed]
    assert any(r.status == 503 for r in held)
    assert all(r.status == 503 or r.answered >= durable.promoted for r in held)


async def test_sessions_and_users_survive_a_failover_in_durable_mode(tmp_path: Path) -> None:
    """A user registered and a session written in durable mode are there after the master is
    killed and a replica promoted: the same cookie logs in, with its counter."""
    with RedisSentinel(replicas=2) as topology:
        env = {
            "QAPP_STORE_URL": topology.url + MODES["durable"],
            "QAPP_INSTANCE_PATH": str(tmp_path),
        }
        with HypercornServer(workers=2, env=env) as web:
            creds = {"username": "failover_ada", "password": "correct horse"}
            async with httpx.AsyncClient(base_url=web.url, timeout=REQUEST_TIMEOUT) as client:
                assert (await client.post("/auth/register", json=creds)).status_code == 201
                assert (await client.post("/auth/login", json=creds)).status_code == 200
                for _ in range(3):
                    assert (await client.post("/session/counter/inc")).status_code == 200
                old = topology.master
                old.kill()
                await asyncio.to_thread(topology.wait_promotion, old)
                deadline = time.monotonic() + RECOVERY_BOUND
                me = await client.get("/auth/me")
                while me.status_code == 503 and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    me = await client.get("/auth/me")
                counter = await client.get("/session/counter")
    assert me.status_code == 200
    assert me.json()["username"] == "failover_ada"
    assert counter.status_code == 200
    assert counter.json()["counter"] == 3
