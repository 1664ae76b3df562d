"""The PostgreSQL store keeps every promise of the others, on a real server the tests start.

The conformance suite (tests/test_state.py) and the cross-process tests
(tests/test_state_processes.py) run on PostgreSQL through conftest's
``store_url`` and ``shared_store_url``, on a ``PostgresServer`` of the test
session's own (never the machine's own cluster on 5432), and so do the
fencing and lease tests (tests/test_fencing.py, tests/test_flight.py). Here is
what only PostgreSQL could get wrong: exact round trips, 64-bit overflow,
expiry on the server's clock, the pool, a fenced write in flight as its
lease runs out, fences that rise across release, sweep and upgrades of
the schema, LISTEN/NOTIFY, and an outage: the server is killed and started
again under the same store object.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from qapp.state import (
    ConfigurationError,
    InvalidValue,
    StaleLease,
    Store,
    StoreUnavailable,
    dumps,
    loads,
    open_store,
    store_from_url,
)
from qapp.store.backends import postgres as backend
from qapp.store.backends import postgres_sql as sql
from qapp.store.backends.postgres import PostgresStore
from qapp.testing.postgres import PostgresServer

PROCESSES = 4


@pytest.fixture
async def store(postgresql_url: str) -> AsyncIterator[Store]:
    """A connected PostgreSQL store, closed afterwards (overrides conftest's ``store``)."""
    async with await open_store(postgresql_url) as opened:
        yield opened


# --- what PostgreSQL itself could get wrong ------------------------------------


async def test_values_come_back_as_loads_of_dumps(store: Store) -> None:
    """Key order, number spelling and NUL survive: the column is json, not jsonb."""
    value = {"z": 1, "a": [1e20, 0.1, -0.0, 10**30], "m": "nul \u0000 ✓", "": {"b": 2, "a": 1}}
    await store.set("k", value)
    got = await store.get("k")
    expected = loads(dumps(value))
    assert got == expected
    assert dumps(got) == dumps(expected)  # same key order, same number types
    assert isinstance(got["a"][0], float)


async def test_keys_may_hold_nul(store: Store) -> None:
    """A key with NUL in it is a key of its own, as on the other backends."""
    await store.set("a\x00b", 1)
    await store.set("a", 2)
    assert await store.get("a\x00b") == 1
    assert await store.incr("a\x00b") == 2
    async with store.lock("a\x00b", wait=0):
        pass


async def test_incr_past_64_bits_is_invalid(store: Store) -> None:
    """A counter that would leave the 64-bit range is refused and left as it was."""
    await store.set("c", 2**63 - 1)
    with pytest.raises(InvalidValue):
        await store.incr("c")
    assert await store.get("c") == 2**63 - 1
    await store.set("huge", 10**30)
    with pytest.raises(InvalidValue):
        await store.incr("huge")
    with pytest.raises(InvalidValue):
        await store.incr("d", 2**64)


async def test_fractional_ttl_expires_on_time(store: Store) -> None:
    """A quarter-second ttl: still there at 0.1 s, gone at 0.35 s, for get, add and incr."""
    await store.set("k", "v", ttl=0.25)
    await store.incr("c", ttl=0.25)
    await asyncio.sleep(0.1)
    assert await store.get("k") == "v"
    assert await store.add("k", "other") is False
    await asyncio.sleep(0.25)
    assert await store.get("k") is None
    assert await store.delete("c") is False
    assert await store.add("k", "new", ttl=0.25) is True
    assert await store.get("k") == "new"


@pytest.mark.parametrize("ttl", [1e15, 1e300])
async def test_huge_ttl_is_as_good_as_none(store: Store, ttl: float) -> None:
    """A ttl past PostgreSQL's interval range keeps the key, as the other backends do."""
    await store.set("k", 1, ttl=ttl)
    assert await store.add("a", 1, ttl=ttl) is True
    assert await store.incr("c", ttl=ttl) == 1
    assert await store.expire("k", ttl) is True
    async with store.lock("l", timeout=ttl, wait=0):
        assert [await store.get(key) for key in ("k", "a", "c")] == [1, 1, 1]


async def test_writers_sweep_expired_rows(
    postgresql_url: str, postgres_server: PostgresServer
) -> None:
    """Expired rows leave the table once a writer of a new worker sweeps; live rows stay."""
    async with await open_store(postgresql_url) as first:
        for i in range(5):
            await first.set(f"short{i}", i, ttl=0.05)
        await first.set("long", "kept")
    await asyncio.sleep(0.1)
    assert postgres_server.psql("SELECT count(*) FROM qapp_kv").strip() == "6"
    # A new store sweeps on its first write, in the background; closing it waits.
    async with await open_store(postgresql_url) as second:
        await second.set("other", 1)
    assert postgres_server.psql("SELECT count(*) FROM qapp_kv").strip() == "2"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:secret@host:notaport/db",
        "postgresql://user:secret@host:99999/db",
        "postgresql://user:secret@host/db/extra",
        "postgresql://user:secret@host/db?sslmode=sometimes",
        "postgresql://user:secret@host/db?a=1&a=2",
        "postgresql://user:secret@host/db#frag",
    ],
)
def test_malformed_url_fails_at_construction(url: str) -> None:
    """A malformed URL is a ConfigurationError before anything connects, password hidden."""
    with pytest.raises(ConfigurationError) as raised:
        store_from_url(url)
    assert "secret" not in str(raised.value)


def test_both_schemes_choose_postgres() -> None:
    """postgresql:// and postgres:// both name this backend, scoped to the cluster."""
    for url in [
        "postgresql://u@h/db",
        "postgres://u@h/db",
        "POSTGRESQL://u@h:6543/db?sslmode=require",
    ]:
        store = store_from_url(url)
        assert isinstance(store, PostgresStore)
        assert store.scope == "cluster"


async def test_unreachable_server_is_unavailable_then_recovers() -> None:
    """A store whose server is not up yet fails fast, and works once the server is."""
    server = PostgresServer()
    try:
        store = store_from_url(server.url)
        began = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            await store.connect()
        assert time.monotonic() - began < 3
        assert isinstance(raised.value.__cause__, OSError)
        await asyncio.to_thread(server.start)
        await store.connect()
        assert await store.incr("c") == 1
        await store.close()
    finally:
        await asyncio.to_thread(server.cleanup)


async def test_busy_pool_is_unavailable_not_a_hang(
    postgresql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every pooled connection taken, a request waits the pool's timeout, then a 503;
    the message names the server but never its password."""
    monkeypatch.setattr(backend, "ACQUIRE_TIMEOUT", 0.3)
    # Trust authentication ignores the password; it is here to be hidden.
    url = postgresql_url.replace("postgres@", "postgres:hunter2@")
    store = store_from_url(url)
    assert isinstance(store, PostgresStore)
    try:
        await store.connect()
        pool = await store._get_pool()
        held = [await pool.acquire() for _ in range(backend.POOL_SIZE)]
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no connection free") as raised:
            await store.get("k")
        assert 0.3 <= time.monotonic() - began < 1.5
        assert "hunter2" not in str(raised.value)
        for conn in held:
            await pool.release(conn)
        assert await store.incr("c") == 1
    finally:
        await store.close()


async def test_concurrent_first_connects_create_the_schema_once(
    postgres_server: PostgresServer,
) -> None:
    """Many stores connecting to an empty database at once all succeed (no catalog race)."""
    name = f"fresh_{os.getpid()}_{time.monotonic_ns()}"
    postgres_server.psql(f'CREATE DATABASE "{name}"', database="postgres")
    stores = [store_from_url(postgres_server.database_url(name)) for _ in range(12)]
    try:
        await asyncio.gather(*(store.connect() for store in stores))
        added = await asyncio.gather(*(store.add("k", i) for i, store in enumerate(stores)))
        assert added.count(True) == 1
        assert await stores[0].get("k") == added.index(True)
    finally:
        await asyncio.gather(*(store.close() for store in stores))
        postgres_server.psql(f'DROP DATABASE "{name}"', database="postgres")


# --- fenced locks, renewal and wake-ups ---------------------------------------------


async def until(check: Callable[[], Awaitable[object]], seconds: float) -> None:
    """Return once ``check()`` is true; TimeoutError if it is not within ``seconds``."""
    async with asyncio.timeout(seconds):
        while True:
            if await check():
                return
            await asyncio.sleep(0.01)


async def test_fenced_write_in_flight_keeps_the_lock_until_it_commits(
    store: Store, postgresql_url: str
) -> None:
    """A fenced write made while its lease lasted holds the lock's row until it commits: a
    taker that comes after the lease ran out waits for it, so the write lands before the
    lock changes hands, and the new holder's token is greater."""
    assert isinstance(store, PostgresStore)
    writer = await asyncpg.connect(postgresql_url)
    monitor = await asyncpg.connect(postgresql_url)
    taking: asyncio.Task[int] | None = None
    try:
        async with store.lock("f", timeout=0.3) as old:
            writing = writer.transaction()
            await writing.start()
            # The holder's write, in a transaction left open while its lease runs out.
            args = (b"doc", '"old"', None, b"f", old.token)
            assert await writer.fetchval(sql.SET_FENCED, *args) == 1
            await asyncio.sleep(0.5)
            taking = asyncio.create_task(store.try_acquire("f", "newer", 5))
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            await until(lambda: monitor.fetchval(waiting), 5)
            assert not taking.done()
            await writing.commit()
            assert await taking > old.token
            with pytest.raises(StaleLease):
                await old.set("doc", "late")
    finally:
        if taking is not None and not taking.done():
            taking.cancel()
        await writer.close()
        await monitor.close()
    assert await store.get("doc") == "old"
    assert await store.extend("f", "newer", 5) is True  # the old holder's release freed nothing


async def test_released_locks_leave_no_rows_and_tokens_rise(
    postgresql_url: str, postgres_server: PostgresServer
) -> None:
    """A released lock's row is deleted, a dead holder's is swept once expired, and the
    store's fence counter still gives the next holder a greater token."""
    async with await open_store(postgresql_url) as first:
        assert isinstance(first, PostgresStore)
        for _ in range(3):
            async with first.lock("l", timeout=0.05) as last:
                pass
        assert await first.try_acquire("dead", "never released", 0.01) >= 1
        await first.set("short", 1, ttl=0.01)
    await asyncio.sleep(0.1)
    async with await open_store(postgresql_url) as second:
        await second.set("other", 1)  # sweeps in the background; closing waits
    assert postgres_server.psql("SELECT count(*) FROM qapp_kv").strip() == "1"
    assert postgres_server.psql("SELECT count(*) FROM qapp_locks").strip() == "0"
    shard = backend.fence_shard(b"l")
    issued = postgres_server.psql(f"SELECT last FROM qapp_fence WHERE shard = {shard}")
    assert int(issued) == last.token == 3
    async with await open_store(postgresql_url) as third, third.lock("l") as next_one:
        assert next_one.token == 4


def test_fence_counter_rows_are_few_and_fixed() -> None:
    """Every lock name draws its tokens from one of FENCE_SHARDS counter rows, always the same."""
    names = [f"name:{n}".encode() for n in range(10_000)]
    shards = [backend.fence_shard(name) for name in names]
    assert set(shards) == set(range(sql.FENCE_SHARDS))
    assert shards == [backend.fence_shard(name) for name in names]


async def test_fences_of_the_per_name_schema_carry_over(
    postgres_server: PostgresServer,
) -> None:
    """A database whose lock rows each kept their name's fence gets the store's counter rows
    on connect, above every one of them, so no name's tokens go back; its free rows are
    swept."""
    name = f"per_name_{os.getpid()}_{time.monotonic_ns()}"
    postgres_server.psql(f'CREATE DATABASE "{name}"', database="postgres")
    postgres_server.psql(
        """
        CREATE TABLE qapp_kv (key bytea PRIMARY KEY, value json NOT NULL, expires_at timestamptz);
        CREATE INDEX qapp_kv_expiry ON qapp_kv (expires_at) WHERE expires_at IS NOT NULL;
        CREATE TABLE qapp_locks (
            name bytea PRIMARY KEY, token text NOT NULL, expires_at timestamptz NOT NULL,
            fence bigint NOT NULL DEFAULT 0
        );
        INSERT INTO qapp_locks VALUES (convert_to('l', 'UTF8'), '', '-infinity', 41);
        INSERT INTO qapp_locks VALUES (convert_to('m', 'UTF8'), '', '-infinity', 7);
        INSERT INTO qapp_locks VALUES (convert_to('n', 'UTF8'), '', '-infinity', 3);
        """,
        database=name,
    )
    try:
        async with await open_store(postgres_server.database_url(name)) as store:
            async with store.lock("m", timeout=5) as m, store.lock("l", timeout=5) as lock:
                assert min(m.token, lock.token) >= 42
            counters = "SELECT count(*), min(last) FROM qapp_fence"
            assert postgres_server.psql(counters, database=name).strip() == f"{sql.FENCE_SHARDS}|41"
            await store.set("k", 1)  # sweeps in the background; closing waits
        rows = postgres_server.psql("SELECT count(*) FROM qapp_locks", database=name)
        assert rows.strip() == "0"
    finally:
        postgres_server.psql(f'DROP DATABASE "{name}"', database="postgres")


async def test_locks_table_of_the_earlier_schema_gains_its_fence(
    postgres_server: PostgresServer,
) -> None:
    """A database made before fencing tokens gets the column on connect, from many stores at
    once, and its locks (held or free) are fenced from then on."""
    name = f"older_{os.getpid()}_{time.monotonic_ns()}"
    postgres_server.psql(f'CREATE DATABASE "{name}"', database="postgres")
    postgres_server.psql(
        """
        CREATE TABLE qapp_kv (key bytea PRIMARY KEY, value json NOT NULL, expires_at timestamptz);
        CREATE INDEX qapp_kv_expiry ON qapp_kv (expires_at) WHERE expires_at IS NOT NULL;
        CREATE TABLE qapp_locks (
            name bytea PRIMARY KEY, token text NOT NULL, expires_at timestamptz NOT NULL
        );
        INSERT INTO qapp_locks VALUES (convert_to('l', 'UTF8'), 'old', now() - interval '1 s');
        INSERT INTO qapp_kv VALUES (convert_to('k', 'UTF8'), '"kept"', NULL);
        """,
        database=name,
    )
    stores = [store_from_url(postgres_server.database_url(name)) for _ in range(8)]
    try:
        await asyncio.gather(*(store.connect() for store in stores))
        assert await stores[0].get("k") == "kept"
        async with stores[0].lock("l", timeout=5) as first:
            assert first.token == 1
            await first.set("k", "fenced")
        async with stores[1].lock("l", timeout=5) as second:
            assert second.token == 2
        with pytest.raises(StaleLease):
            await first.set("k", "late")
        assert await stores[2].get("k") == "fenced"
        column = postgres_server.psql(
            "SELECT data_type, is_nullable FROM information_schema.columns "
            "WHERE table_name = 'qapp_locks' AND column_name = 'fence'",
            database=name,
        )
        assert column.strip() == "bigint|NO"
    finally:
        await asyncio.gather(*(store.close() for store in stores))
        postgres_server.psql(f'DROP DATABASE "{name}"', database="postgres")


async def test_renewal_is_by_the_holders_token(store: Store) -> None:
    """Only the holder's own token renews, and only while its lease lasts."""
    assert isinstance(store, PostgresStore)
    assert await store.try_acquire("l", "mine", 0.5) == 1
    assert await store.extend("l", "theirs", 5) is False
    assert await store.extend("l", "mine", 1.5) is True
    await asyncio.sleep(0.7)  # past the first lease, well inside the renewed one
    assert await store.try_acquire("l", "theirs", 5) == 0
    await asyncio.sleep(1.0)
    assert await store.extend("l", "mine", 5) is False  # lapsed, even though nobody took it
    await store.release("l", "mine")
    assert await store.try_acquire("l", "theirs", 5) == 2


async def test_notify_reaches_other_stores_and_comes_back_after_a_restart() -> None:
    """NOTIFY wakes a listener of another store object, whatever its name; when the server dies
    listeners are woken and told to poll, and once it is back notifications flow again."""
    with PostgresServer() as server:
        async with await open_store(server.url) as listener, await open_store(server.url) as other:
            # Longer than a payload may be, and with a NUL no payload may hold.
            name = "a\x00" + "x" * 10_000
            async with listener.listen(name) as wakeup, listener.listen("b") as bystander:
                assert wakeup.pushes is True
                waiting = asyncio.create_task(wakeup.wait(5))
                await other.notify(name)
                assert await waiting is True
                assert await bystander.wait(0.1) is False

                await asyncio.to_thread(server.kill)
                # Every listener looks again: a notification may have been lost.
                assert await wakeup.wait(5) is True
                assert await bystander.wait(5) is True
                assert wakeup.pushes is False

                await asyncio.to_thread(server.start)

                async def listening() -> bool:
                    return wakeup.pushes

                await until(listening, 10)
                wakeup_bystander = asyncio.create_task(bystander.wait(0.5))
                waiting = asyncio.create_task(wakeup.wait(5))
                await other.notify(name)
                assert await waiting is True
                assert await wakeup_bystander is False


# --- an outage: the server is killed, then started again ---------------------------


async def test_outage_fails_fast_and_the_same_store_recovers() -> None:
    """Killed server: every operation raises StoreUnavailable at once, none hangs.
    Started again: the same store object works, with no reconnect by hand."""
    with PostgresServer() as server:
        async with await open_store(server.url) as store:
            assert await store.incr("c") == 1
            await store.set("k", "before")

            # In flight at the moment of the crash: a stream of increments.
            async def keep_counting() -> BaseException:
                while True:
                    try:
                        await store.incr("c")
                    except StoreUnavailable as exc:
                        return exc

            counting = asyncio.create_task(keep_counting())
            await asyncio.sleep(0.05)
            await asyncio.to_thread(server.kill)
            failure = await asyncio.wait_for(counting, 2)
            assert failure.__cause__ is not None

            operations: list[Callable[[], Awaitable[object]]] = [
                lambda: store.get("k"),
                lambda: store.set("k", "during"),
                lambda: store.incr("c"),
                lambda: store.add("new", 1),
                lambda: store.delete("k"),
                lambda: store.expire("k", 5),
                lambda: store.notify("l"),
                store.ping,
            ]
            for operation in operations:
                began = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await operation()
                assert time.monotonic() - began < 1.0
            with pytest.raises(StoreUnavailable):
                async with store.lock("l", wait=0.2):
                    pytest.fail("took a lock with the server down")
            # A first listener does not wait for a server that refuses: it polls.
            began = time.monotonic()
            async with store.listen("l") as wakeup:
                assert wakeup.pushes is False
            assert time.monotonic() - began < 1.0

            await asyncio.to_thread(server.start)
            # Committed before the crash, so still there; the store reconnects itself.
            assert await store.get("k") == "before"
            counted = await store.incr("c")
            assert counted > 1
            async with store.lock("l", wait=1):
                await store.set("k", "after")
            assert await store.get("k") == "after"


async def test_restart_while_idle_costs_no_failed_request() -> None:
    """A restart the store did not witness: the next request already works."""
    with PostgresServer() as server:
        async with await open_store(server.url) as store:
            # Several pooled connections, all of which the restart breaks.
            await asyncio.gather(*(store.set(f"k{i}", i) for i in range(10)))
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)
            assert await asyncio.gather(*(store.get(f"k{i}") for i in range(10))) == list(range(10))
