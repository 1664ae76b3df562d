"""Many keys at once, ttls and prefix scans on PostgreSQL: what :class:`PostgresKeys` adds.

Each is one statement in autocommit, as everything on this backend (the SQL
is in :mod:`~qapp.store.backends.postgres_sql`):

- ``get_many`` is one ``SELECT … WHERE key = ANY($1)`` and ``set_many`` one
  ``INSERT … SELECT … FROM unnest($1, $2) … ON CONFLICT``: one round trip and
  one transaction for any number of keys.
- ``scan`` is keyset pagination on the primary key: each statement reads at
  most ``batch`` rows from where the last one stopped, expired rows included
  and skipped here, so no statement's work grows with the table. ``clear``
  deletes the first ``batch`` rows of the range per statement until none is
  left. Keys are ``bytea``, compared byte by byte, so the keys under a
  prefix are one range of the index (:func:`bytes_end`).
"""

from __future__ import annotations

import abc
import asyncio
import math
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import asyncpg

from qapp.store.backends.postgres_sql import (
    CLEAR,
    CLEAR_ALL,
    GET_MANY,
    SCAN,
    SCAN_ALL,
    SET_MANY,
    TTL,
)
from qapp.store.interface import SCAN_BATCH, Store, check_batch, check_prefix
from qapp.store.values import JSONValue, check_ttl, dumps, loads

__all__ = ["PostgresKeys", "bytes_end"]

#: The longest ttl sent to the server, as in qapp.store.backends.postgres (PostgreSQL's
#: interval ends there, about 317 years on).
_TTL_CAP = 1e10


def bytes_end(prefix: bytes) -> bytes | None:
    """The least byte string above every one that starts with ``prefix``; None if none is.

    The last byte is raised by one; trailing ``0xff`` bytes, which cannot be
    raised, are dropped first.
    """
    stem = prefix.rstrip(b"\xff")
    if not stem:
        return None
    return stem[:-1] + bytes([stem[-1] + 1])


class PostgresKeys(Store):
    """``ttl``, ``get_many``, ``set_many``, ``scan`` and ``clear`` for PostgresStore.

    Built on PostgresStore's own statement runners, which it declares here.
    """

    @abc.abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run one statement on a pooled connection and return its rows."""

    @abc.abstractmethod
    async def _write(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """:meth:`_fetch` a writing statement (writes start the sweep of expired rows)."""

    async def ttl(self, key: str) -> float | None:
        rows = await self._fetch(TTL, key.encode())
        if not rows:
            return None
        left: float | None = rows[0][0]
        return math.inf if left is None else left

    async def get_many(self, keys: Iterable[str]) -> dict[str, JSONValue]:
        wanted = [key.encode() for key in dict.fromkeys(keys)]
        if not wanted:
            return {}
        rows = await self._fetch(GET_MANY, wanted)
        return {bytes(key).decode(): loads(raw) for key, raw in rows}

    async def set_many(self, mapping: Mapping[str, JSONValue], ttl: float | None = None) -> None:
        values = [dumps(value) for value in mapping.values()]
        ttl = check_ttl(ttl)
        if not values:
            return
        keys = [key.encode() for key in mapping]
        await self._write(SET_MANY, keys, values, None if ttl is None else min(ttl, _TTL_CAP))

    async def scan(self, prefix: str = "", *, batch: int = SCAN_BATCH) -> AsyncIterator[str]:
        prefix, batch = check_prefix(prefix), check_batch(batch)
        low, high = prefix.encode(), bytes_end(prefix.encode())
        while True:
            if high is None:
                rows = await self._fetch(SCAN_ALL, low, batch)
            else:
                rows = await self._fetch(SCAN, low, high, batch)
            for key, live in rows:
                if live:
                    yield bytes(key).decode()
            if len(rows) < batch:
                return
            # The least byte string above the last key: the next page starts there.
            low = bytes(rows[-1][0]) + b"\x00"

    async def clear(self, prefix: str = "") -> int:
        low = check_prefix(prefix).encode()
        high = bytes_end(low)
        cleared = 0
        while True:
            if high is None:
                rows = await self._fetch(CLEAR_ALL, low, SCAN_BATCH)
            else:
                rows = await self._fetch(CLEAR, low, high, SCAN_BATCH)
            gone, lived = rows[0]
            cleared += lived
            if gone < SCAN_BATCH:
                return int(cleared)
            await asyncio.sleep(0)  # let this worker's other statements in between
