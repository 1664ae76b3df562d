"""Many keys at once, ttls and prefix scans on SQLite: what :class:`SQLiteKeys` adds to SQLiteStore.

Each is one statement in autocommit, as everything on this backend:

- ``get_many`` is one ``SELECT … WHERE key IN (SELECT value FROM json_each(?))``
  and ``set_many`` one ``INSERT … SELECT … FROM json_each(?) … ON CONFLICT``:
  the keys travel as one JSON array, so there is no limit on their number
  from SQLite's bound parameters, and the write is one transaction.
- ``scan`` is keyset pagination on the primary key: each statement reads at
  most ``batch`` rows from where the last one stopped (``key >= ? AND key <
  ? ORDER BY key LIMIT ?``), expired rows included and skipped here, so that
  no statement's work grows with the table. ``clear`` deletes the first
  ``batch`` rows of the range per statement until none is left.
"""

from __future__ import annotations

import abc
import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from qapp.store.interface import SCAN_BATCH, Store, check_batch, check_prefix
from qapp.store.values import JSONValue, check_ttl, dumps, loads

__all__ = ["SQLiteKeys", "prefix_end"]

# "Live" means not expired at :now, as in qapp.store.backends.sqlite.
_LIVE = "(qapp_kv.expires_at IS NULL OR qapp_kv.expires_at > :now)"

TTL = f"SELECT expires_at FROM qapp_kv WHERE key = :key AND {_LIVE}"
GET_MANY = f"""
SELECT key, value FROM qapp_kv
WHERE key IN (SELECT value FROM json_each(:keys)) AND {_LIVE}
"""
# WHERE true: SQLite's parser needs it between a SELECT and ON CONFLICT.
SET_MANY = """
INSERT INTO qapp_kv (key, value, expires_at)
SELECT json_extract(pair.value, '$[0]'), json_extract(pair.value, '$[1]'), :expires
FROM json_each(:pairs) AS pair WHERE true
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""
# A range of keys, [:low, :high), or [:low, ∞) for the *_ALL forms.
_RANGE = "key >= :low AND key < :high"
_FROM = "key >= :low"
_PAGE = "SELECT key, {live} FROM qapp_kv WHERE {range} ORDER BY key LIMIT :batch"
SCAN = _PAGE.format(live=_LIVE, range=_RANGE)
SCAN_ALL = _PAGE.format(live=_LIVE, range=_FROM)
# RETURNING the expiry itself, judged here: in the RETURNING of a DELETE from
# this WITHOUT ROWID table, SQLite 3.40 got ``expires_at IS NULL`` wrong (0 or
# NULL for a row whose expires_at it returned as NULL).
_CLEAR = """
DELETE FROM qapp_kv WHERE key IN (SELECT key FROM qapp_kv WHERE {range} ORDER BY key LIMIT :batch)
RETURNING expires_at
"""
CLEAR = _CLEAR.format(range=_RANGE)
CLEAR_ALL = _CLEAR.format(range=_FROM)

#: Code points UTF-8 cannot encode: the next character after U+D7FF is U+E000.
_SURROGATES = range(0xD800, 0xE000)


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``; None if there is none.

    SQLite compares text byte by byte in UTF-8, which orders strings by code
    point, so the keys under ``prefix`` are exactly those in
    ``[prefix, prefix_end(prefix))``: the last character is raised by one
    (the ones at U+10FFFF, which cannot be raised, are dropped first).
    """
    chars = prefix.rstrip(chr(0x10FFFF))
    if not chars:
        return None
    raised = ord(chars[-1]) + 1
    if raised in _SURROGATES:
        raised = _SURROGATES.stop
    return chars[:-1] + chr(raised)


class SQLiteKeys(Store):
    """``ttl``, ``get_many``, ``set_many``, ``scan`` and ``clear`` for SQLiteStore.

    Built on SQLiteStore's own statement runners, which it declares here.
    """

    @abc.abstractmethod
    async def _run(self, sql: str, params: dict[str, Any]) -> list[Any]:
        """Run one statement and fetch its rows in one driver call."""

    @abc.abstractmethod
    async def _write(self, sql: str, params: dict[str, Any]) -> list[Any]:
        """:meth:`_run` a writing statement (writes start the sweep of expired rows)."""

    async def ttl(self, key: str) -> float | None:
        now = time.time()
        rows = await self._run(TTL, {"key": key, "now": now})
        if not rows:
            return None
        expires: float | None = rows[0][0]
        return math.inf if expires is None else expires - now

    async def get_many(self, keys: Iterable[str]) -> dict[str, JSONValue]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        params = {"keys": json.dumps(wanted), "now": time.time()}
        return {key: loads(raw) for key, raw in await self._run(GET_MANY, params)}

    async def set_many(self, mapping: Mapping[str, JSONValue], ttl: float | None = None) -> None:
        pairs = [[key, dumps(value)] for key, value in mapping.items()]
        ttl = check_ttl(ttl)
        if not pairs:
            return
        now = time.time()
        expires = None if ttl is None else now + ttl
        await self._write(SET_MANY, {"pairs": json.dumps(pairs), "expires": expires, "now": now})

    async def scan(self, prefix: str = "", *, batch: int = SCAN_BATCH) -> AsyncIterator[str]:
        prefix, batch = check_prefix(prefix), check_batch(batch)
        high = prefix_end(prefix)
        sql = SCAN_ALL if high is None else SCAN
        low = prefix
        while True:
            params = {"low": low, "high": high, "batch": batch, "now": time.time()}
            rows = await self._run(sql, params)
            for key, live in rows:
                if live:
                    yield key
            if len(rows) < batch:
                return
            # The least string above the last key: the next page starts there.
            low = rows[-1][0] + "\x00"

    async def clear(self, prefix: str = "") -> int:
        prefix = check_prefix(prefix)
        high = prefix_end(prefix)
        sql = CLEAR_ALL if high is None else CLEAR
        cleared = 0
        while True:
            now = time.time()
            rows = await self._run(sql, {"low": prefix, "high": high, "batch": SCAN_BATCH})
            cleared += sum(1 for (expires,) in rows if expires is None or expires > now)
            if len(rows) < SCAN_BATCH:
                return cleared
            await asyncio.sleep(0)  # let this worker's other statements in between
