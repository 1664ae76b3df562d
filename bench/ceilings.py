"""The stores' own ceilings, measured beside the HTTP routes in the same run.

- Redis: ``redis-benchmark -t incr`` against the very redis-server the
  routes use, with the same number of connections.
- SQLite: a raw aiosqlite loop of the UPSERT that ``SQLiteStore.incr`` runs,
  on a file in the run's temporary directory, with the store's pragmas
  (WAL, ``synchronous=NORMAL``, autocommit). One connection, one statement
  at a time: what one worker could do if HTTP cost nothing.
- PostgreSQL: ``pgbench`` running the very ``INSERT … ON CONFLICT …
  RETURNING`` that ``PostgresStore.incr`` sends, prepared, on one key, with
  the same number of connections, against the server the routes use.

They show how close each HTTP route gets to what its store can do at all.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from qapp.store.backends import postgres_sql, sqlite_sql
from qapp.store.backends import sqlite as sqlite_backend
from qapp.testing import PostgresServer, redis_server_binary
from qapp.testing.postgres import SUPERUSER


@dataclass(frozen=True)
class Ceiling:
    """One store's raw throughput, or why it could not be measured."""

    name: str
    #: The store whose routes it bounds: ``redis``, ``sqlite``, ``postgresql``.
    store: str
    how: str
    ops_per_s: float | None
    reason: str | None = None


def redis_benchmark_binary() -> str | None:
    """redis-benchmark on PATH, else the one beside the redis-server in use."""
    found = shutil.which("redis-benchmark")
    if found:
        return found
    beside = Path(redis_server_binary()).with_name("redis-benchmark")
    return str(beside) if beside.exists() else None


def redis_incr(port: int, connections: int, requests: int = 200_000) -> Ceiling:
    """``redis-benchmark -t incr`` against 127.0.0.1:``port``."""
    how = f"redis-benchmark -t incr -c {connections} -n {requests} (no pipelining)"
    binary = redis_benchmark_binary()
    if binary is None:
        return Ceiling(
            "redis INCR", "redis", how, None, "redis-benchmark not found (Debian: redis-tools)"
        )
    argv = [binary, "-h", "127.0.0.1", "-p", str(port), "-t", "incr"]
    argv += ["-c", str(connections), "-n", str(requests), "--csv"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        return Ceiling(
            "redis INCR", "redis", how, None, f"redis-benchmark failed: {proc.stderr.strip()}"
        )
    # CSV: a header row, then "INCR","<requests per second>",...
    for row in csv.reader(io.StringIO(proc.stdout)):
        if row and row[0] == "INCR":
            return Ceiling("redis INCR", "redis", how, float(row[1]))
    return Ceiling("redis INCR", "redis", how, None, f"no INCR row in: {proc.stdout[:200]}")


async def _upsert_loop(path: Path, seconds: float) -> float:
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute(f"PRAGMA busy_timeout = {sqlite_backend.BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.executescript(sqlite_sql.SCHEMA)
        params = {"key": "ceiling", "delta": 1, "expires": None, "now": time.time()}
        done = 0
        began = time.perf_counter()
        deadline = began + seconds
        while time.perf_counter() < deadline:
            # The store's own statement, fetched in the same driver call.
            await conn.execute_fetchall(sqlite_sql.INCR, params)
            done += 1
        return done / (time.perf_counter() - began)


def sqlite_upsert(directory: Path, seconds: float) -> Ceiling:
    """A raw aiosqlite UPSERT … RETURNING loop for ``seconds`` seconds."""
    how = f"aiosqlite UPSERT … RETURNING, one connection, sequential, {seconds:g} s"
    rate = asyncio.run(_upsert_loop(directory / "ceiling.db", seconds))
    return Ceiling("sqlite UPSERT", "sqlite", how, round(rate, 1))


#: The store's increment as a pgbench script: the key a pgbench variable (a
#: bind parameter under ``-M prepared``), a delta of 1 and no expiry.
PGBENCH_INCR = (
    postgres_sql.INCR.replace("$1", ":key").replace("$2", "1").replace("$3", "NULL") + ";\n"
)


def pgbench_binary(server: PostgresServer) -> str | None:
    """pgbench beside the server's initdb, else on PATH."""
    beside = server.bindir / "pgbench"
    return str(beside) if beside.is_file() else shutil.which("pgbench")


def postgres_upsert(
    server: PostgresServer, directory: Path, connections: int, seconds: float, threads: int
) -> Ceiling:
    """``pgbench`` of the store's UPSERT on one key, ``connections`` at a time, for ``seconds``."""
    how = (
        f"pgbench -M prepared -c {connections} -j {threads} -T {seconds:g}: "
        "the store's INCR UPSERT … RETURNING on one key"
    )
    name = "postgresql UPSERT"
    binary = pgbench_binary(server)
    if binary is None:
        return Ceiling(name, "postgresql", how, None, "pgbench not found (Debian: postgresql)")
    # The store's tables, as the first store to connect would make them.
    server.psql(postgres_sql.SCHEMA)
    script = directory / "pgbench-incr.sql"
    script.write_text(PGBENCH_INCR)
    argv = [binary, "-n", "-M", "prepared", "-D", "key=pgbench-ceiling", "-f", str(script)]
    argv += ["-c", str(connections), "-j", str(threads), "-T", f"{max(1, round(seconds))}"]
    argv += ["-h", "127.0.0.1", "-p", str(server.port), "-U", SUPERUSER, server.database]
    # Only our own server: no PGHOST, PGPORT or PGPASSWORD of the caller's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=seconds + 120, check=False
    )
    found = re.search(r"^tps = ([0-9.]+)", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or found is None:
        reason = (proc.stderr or proc.stdout).strip()[-300:]
        return Ceiling(name, "postgresql", how, None, f"pgbench failed: {reason}")
    return Ceiling(name, "postgresql", how, round(float(found.group(1)), 1))
