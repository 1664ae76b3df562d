"""Prove your own routes race-free, the way qapp proves its own: real servers, real races.

- :class:`HypercornServer` starts your app (``module:app``) under real
  hypercorn worker processes (``qapp serve``: a crashed worker is replaced,
  each worker has its own socket) on a free loopback port, and stops it;
- :class:`RedisServer` and :class:`PostgresServer` do the same for a
  throwaway redis-server or PostgreSQL (``initdb`` + ``pg_ctl``);
- :func:`race` / :func:`fire` send a burst of concurrent requests and report
  answers, distinct values, repeats, statuses and workers seen (with httpx:
  the ``lab`` extra, ``pip install 'qapp[lab]'``; the servers need only the core).

::

    from qapp.testing import HypercornServer, race

    def test_hits_are_unique(tmp_path):
        env = {"QAPP_STORE_URL": f"sqlite://{tmp_path}/app.db"}
        with HypercornServer(app="myapp:app", workers=4, env=env) as server:
            report = race(f"{server.url}/hits", requests=200, value="hits")
        assert report.distinct == 200 and report.repeated == 0
"""

from __future__ import annotations

from qapp.testing.postgres import PostgresServer
from qapp.testing.race import Answer, RaceReport, fire, fresh_connections, race
from qapp.testing.servers import (
    KEEPALIVE_EXPIRY,
    HypercornServer,
    RedisServer,
    ServerError,
    free_port,
    redis_server_binary,
)

__all__ = [
    "KEEPALIVE_EXPIRY",
    "Answer",
    "HypercornServer",
    "PostgresServer",
    "RaceReport",
    "RedisServer",
    "ServerError",
    "fire",
    "free_port",
    "fresh_connections",
    "race",
    "redis_server_binary",
]
