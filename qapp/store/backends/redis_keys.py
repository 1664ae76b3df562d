"""Many keys at once, ttls and prefix scans on Redis: what :class:`RedisKeys` adds to RedisStore.

- ``ttl`` is ``PTTL``; ``get_many`` is one ``MGET``; ``set_many`` is one Lua
  script (``set_many.lua``), so the keys appear together, each with the ttl.
- ``scan`` is ``SCAN … MATCH <prefix>* COUNT <batch>``, never ``KEYS``: each
  call walks a bounded part of the keyspace, so the server serves everyone
  else between them. The prefix is escaped, so ``*?[]\\`` in it match only
  themselves. ``clear`` deletes what each ``SCAN`` call found with one ``DEL``.
- On Cluster the keys of one ``MGET``, script or ``DEL`` must share a slot:
  the keys are grouped by slot (:meth:`RedisKeys._slot_groups`), one command
  per group, sent concurrently, and the scan walks every master in turn.

Every command goes through the store's own gates (``_command``), and a
write through ``_write``, so durable mode waits for replicas here too.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from importlib import resources
from typing import Any, NamedTuple, TypeVar

from qapp.store.interface import SCAN_BATCH, Store, check_batch, check_prefix
from qapp.store.values import JSONValue, check_ttl, dumps, loads

__all__ = ["RedisKeys", "escape_glob"]

T = TypeVar("T")

#: What the glob of ``SCAN MATCH`` treats as special; each is escaped by a backslash.
GLOB_SPECIALS = frozenset("*?[]\\")
#: A stand-in key, to find where a key sits in its Redis key (before: the prefix, after: "}"
#: on Cluster). No prefix holds it, so the first one found is the stand-in.
_MARK = "\x00"


class LuaScript(NamedTuple):
    """A Lua script's text and digest, as RedisStore's ``_eval`` sends them."""

    text: str
    sha: str


def _load(name: str) -> LuaScript:
    text = resources.files("qapp.store.backends").joinpath(name).read_text(encoding="utf-8")
    return LuaScript(text, hashlib.sha1(text.encode()).hexdigest())


SET_MANY = _load("set_many.lua")


def escape_glob(text: str) -> str:
    """``text`` as a Redis glob that matches only itself."""
    return "".join(f"\\{char}" if char in GLOB_SPECIALS else char for char in text)


class RedisKeys(Store):
    """``ttl``, ``get_many``, ``set_many``, ``scan`` and ``clear`` for RedisStore (module doc).

    Built on RedisStore's own key names, gates and writes, which it declares
    here and RedisStore defines.
    """

    @abc.abstractmethod
    def _data_key(self, key: str) -> str:
        """The Redis key that holds ``key``'s value."""

    @abc.abstractmethod
    def _command(self, write: bool = False) -> contextlib.AbstractAsyncContextManager[Any]:
        """One pool connection's worth of commands, failing as the store's own error."""

    @abc.abstractmethod
    async def _call(self, client: Any, *command: str | int) -> Any:
        """Send one command and return its reply."""

    @abc.abstractmethod
    async def _write(self, client: Any, route: str, *command: str | int) -> Any:
        """Send one command that changes data (durable mode: then wait for replicas)."""

    @abc.abstractmethod
    async def _eval(
        self,
        client: Any,
        script: Any,
        keys: list[str],
        args: list[str | int],
        write: bool = True,
    ) -> Any:
        """Run a Lua script by digest, or by text where Redis lacks it."""

    # --- what Cluster changes ------------------------------------------------------

    def _slot_groups(self, stored: list[str]) -> list[list[str]]:
        """``stored`` keys in groups that one command may touch: all of them, but on Cluster."""
        return [stored]

    async def _scan_targets(self) -> list[Any]:
        """The servers a scan walks: the one server (None), but on Cluster every master."""
        return [None]

    async def _scan_page(
        self, client: Any, target: Any, cursor: int, pattern: str, batch: int
    ) -> tuple[int, list[str]]:
        """One ``SCAN`` call on ``target``: the next cursor (0: done) and the keys found."""
        next_cursor, found = await client.redis.scan(cursor=cursor, match=pattern, count=batch)
        return int(next_cursor), list(found)

    # --- the API ---------------------------------------------------------------------

    def _key_of(self, stored: str) -> str:
        """The store's key held in the Redis key ``stored`` (the inverse of ``_data_key``)."""
        head, _, tail = self._data_key(_MARK).partition(_MARK)
        return stored[len(head) : len(stored) - len(tail)]

    async def _per_slot(
        self, stored: list[str], send: Callable[[Any, list[str]], Awaitable[T]], write: bool
    ) -> list[T]:
        """``send(client, group)`` for each group of one slot, concurrently; their answers."""

        async def one(group: list[str]) -> T:
            async with self._command(write=write) as client:
                return await send(client, group)

        groups = self._slot_groups(stored)
        if len(groups) == 1:
            return [await one(groups[0])]
        return list(await asyncio.gather(*(one(group) for group in groups)))

    async def ttl(self, key: str) -> float | None:
        async with self._command() as client:
            ms = int(await self._call(client, "PTTL", self._data_key(key)))
        # PTTL: -2 for a missing key, -1 for one without expiry.
        if ms == -2:
            return None
        return math.inf if ms == -1 else ms / 1000

    async def get_many(self, keys: Iterable[str]) -> dict[str, JSONValue]:
        stored = {self._data_key(key): key for key in keys}
        if not stored:
            return {}

        async def read(client: Any, group: list[str]) -> list[tuple[str, Any]]:
            return list(zip(group, await self._call(client, "MGET", *group), strict=True))

        groups = self._slot_groups(list(stored))
        if len(groups) == 1:
            # The usual case (always, but on Cluster): one MGET, no gathering.
            async with self._command() as client:
                answers = [await read(client, groups[0])]
        else:
            answers = await self._per_slot(list(stored), read, write=False)
        found: dict[str, JSONValue] = {}
        for pairs in answers:
            found.update((stored[each], loads(raw)) for each, raw in pairs if raw is not None)
        return found

    async def set_many(self, mapping: Mapping[str, JSONValue], ttl: float | None = None) -> None:
        encoded = {self._data_key(key): dumps(value) for key, value in mapping.items()}
        ttl = check_ttl(ttl)
        if not encoded:
            return
        # Milliseconds, never rounded down to 0, as for set.
        expiry: str | int = "" if ttl is None else max(1, math.ceil(ttl * 1000))

        async def write(client: Any, group: list[str]) -> Any:
            values = [encoded[each] for each in group]
            return await self._eval(client, SET_MANY, group, [expiry, *values])

        await self._per_slot(list(encoded), write, write=True)

    async def _pages(self, prefix: str, batch: int) -> AsyncIterator[list[str]]:
        """The Redis keys of the store's keys under ``prefix``, one ``SCAN`` call's worth at a time.

        No connection is held between calls, so a caller that stops early
        leaves nothing behind.
        """
        head, _, tail = self._data_key(_MARK).partition(_MARK)
        pattern = f"{escape_glob(head)}{escape_glob(prefix)}*{escape_glob(tail)}"
        for target in await self._scan_targets():
            cursor = 0
            while True:
                async with self._command() as client:
                    cursor, found = await self._scan_page(client, target, cursor, pattern, batch)
                if found:
                    yield list(dict.fromkeys(found))
                if cursor == 0:
                    break

    async def scan(self, prefix: str = "", *, batch: int = SCAN_BATCH) -> AsyncIterator[str]:
        async for page in self._pages(check_prefix(prefix), check_batch(batch)):
            for stored in page:
                yield self._key_of(stored)

    async def clear(self, prefix: str = "") -> int:
        async def delete(client: Any, group: list[str]) -> int:
            return int(await self._write(client, group[0], "DEL", *group))

        cleared = 0
        async for page in self._pages(check_prefix(prefix), SCAN_BATCH):
            cleared += sum(await self._per_slot(page, delete, write=True))
        return cleared
