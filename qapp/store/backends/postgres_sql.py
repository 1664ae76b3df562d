"""The SQL of :mod:`qapp.store.backends.postgres`: the schema and one statement per operation.

Every statement is complete on its own and runs in autocommit mode: no
transaction is ever open across an ``await``. "Live" means not expired on
the database server's clock (``statement_timestamp()``), the one clock every
host agrees on; a dead row is treated as absent everywhere.
"""

from __future__ import annotations

#: The advisory lock key under which connecting processes create the schema one at a time.
SCHEMA_LOCK = 0x71617070  # "qapp"
#: The channel that carries every notification of the database (see Wakeups).
WAKEUP_CHANNEL = "qapp_wakeup"
#: Rows of the fence counter: a lock name always draws from one (see LOCK).
FENCE_SHARDS = 64
#: The most dead holders' lock rows one sweep deletes (each sweep runs again later).
LOCK_SWEEP_LIMIT = 1000

SCHEMA_PRESENT = """
SELECT to_regclass('qapp_kv') IS NOT NULL
   AND to_regclass('qapp_kv_expiry') IS NOT NULL
   AND to_regclass('qapp_fence') IS NOT NULL
   AND EXISTS (
       SELECT 1 FROM pg_attribute
       WHERE attrelid = to_regclass('qapp_locks') AND attname = 'fence' AND NOT attisdropped
   )
"""
# Sent as one simple query, which PostgreSQL runs as one transaction: the
# advisory lock is held until every CREATE has committed, so processes that
# connect at the same moment do not race on the catalog (two concurrent
# CREATE TABLE IF NOT EXISTS can fail with a unique violation in pg_type).
SCHEMA = f"""
SET LOCAL client_min_messages = warning;
SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
CREATE TABLE IF NOT EXISTS qapp_kv (
    key bytea PRIMARY KEY,
    value json NOT NULL,
    expires_at timestamptz
);
CREATE INDEX IF NOT EXISTS qapp_kv_expiry ON qapp_kv (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS qapp_locks (
    name bytea PRIMARY KEY,
    token text NOT NULL,
    expires_at timestamptz NOT NULL,
    fence bigint NOT NULL DEFAULT 0
);
-- A database made before locks had fencing tokens gets the column here.
ALTER TABLE qapp_locks ADD COLUMN IF NOT EXISTS fence bigint NOT NULL DEFAULT 0;
-- The store's fence counter, in FENCE_SHARDS rows: the last token each issued,
-- so that a lock's row can go once it is released (see LOCK). Seeded above
-- every fence that rows of a database made by an earlier version hold.
CREATE TABLE IF NOT EXISTS qapp_fence (
    shard int PRIMARY KEY CHECK (shard >= 0 AND shard < {FENCE_SHARDS}),
    last bigint NOT NULL
);
INSERT INTO qapp_fence (shard, last)
SELECT shard, (SELECT coalesce(max(fence), 0) FROM qapp_locks)
FROM generate_series(0, {FENCE_SHARDS - 1}) AS shard
ON CONFLICT (shard) DO NOTHING;
"""

# statement_timestamp() is the server's clock at the start of the statement:
# one instant for the whole statement, and (unlike clock_timestamp()) stable,
# so the expiry index can serve the sweep.
_NOW = "statement_timestamp()"
# A ttl in seconds (NULL: none) as a moment on the server's clock.
_EXPIRES = f"{_NOW} + $3::float8 * interval '1 second'"
_LIVE = f"(qapp_kv.expires_at IS NULL OR qapp_kv.expires_at > {_NOW})"
_DEAD = f"(qapp_kv.expires_at IS NOT NULL AND qapp_kv.expires_at <= {_NOW})"
# What dumps writes for an int; a float (1.0), a bool or a string is no counter.
_INTEGER = r"qapp_kv.value::text ~ '^-?(0|[1-9][0-9]*)$'"

GET = f"SELECT value::text FROM qapp_kv WHERE key = $1 AND {_LIVE}"
SET = f"""
INSERT INTO qapp_kv (key, value, expires_at) VALUES ($1, $2::text::json, {_EXPIRES})
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""
# Replaces a row only if it is dead; RETURNING yields a row only if we wrote.
ADD = f"""
INSERT INTO qapp_kv (key, value, expires_at) VALUES ($1, $2::text::json, {_EXPIRES})
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
WHERE {_DEAD}
RETURNING 1
"""
DELETE = f"DELETE FROM qapp_kv WHERE key = $1 RETURNING {_LIVE}"
EXPIRE = f"""
UPDATE qapp_kv SET expires_at = {_NOW} + $2::float8 * interval '1 second'
WHERE key = $1 AND {_LIVE}
RETURNING 1
"""
# A dead row restarts from the delta with the new expiry; a live one keeps its
# expiry. No row comes back when the live value is not an integer. A sum
# outside 64 bits fails with numeric_value_out_of_range.
INCR = f"""
INSERT INTO qapp_kv (key, value, expires_at) VALUES ($1, $2::int8::text::json, {_EXPIRES})
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN {_DEAD} THEN excluded.value
                 ELSE (qapp_kv.value::text::int8 + $2::int8)::text::json END,
    expires_at = CASE WHEN {_DEAD} THEN excluded.expires_at ELSE qapp_kv.expires_at END
WHERE {_DEAD} OR {_INTEGER}
RETURNING value::text::int8
"""
# One batch of the sweep: at most $1 rows, skipping rows a writer holds, so
# it never stalls writers for long; the predicate is checked again on the
# row it deletes. It answers how many rows went, and the seconds the server
# spent on it (the clock is read once every row is gone). The keys are
# gathered into an array first, so that the rows are found by the primary
# key: with "key IN (subquery)" the planner may hash-join a scan of the whole table.
SWEEP = f"""
WITH gone AS (
    DELETE FROM qapp_kv WHERE key = ANY(ARRAY(
        SELECT key FROM qapp_kv WHERE expires_at <= {_NOW}
        LIMIT $1 FOR UPDATE SKIP LOCKED
    )) AND {_DEAD}
    RETURNING 1
)
SELECT count(*), extract(epoch FROM clock_timestamp() - {_NOW})::float8 FROM gone
"""
# The rows of locks whose holder died (a released lock's row is deleted at
# once), bounded and skipping rows in use as SWEEP does.
SWEEP_LOCKS = f"""
DELETE FROM qapp_locks WHERE name IN (
    SELECT name FROM qapp_locks WHERE expires_at <= {_NOW}
    LIMIT {LOCK_SWEEP_LIMIT} FOR UPDATE SKIP LOCKED
) AND expires_at <= {_NOW}
"""
# Taking the lock issues the next fencing token of its name's counter row
# ($4, always the same for a name) in the same statement, so tokens rise for
# every name with no row kept per name. The counter's row stays locked until
# the statement commits, so a token is never issued before an earlier one's
# lock row is in place: a taker that drew a smaller token cannot take the lock
# after a holder with a greater one has come and gone. That serialises the
# takers of one row's names on its commits, which is why there are
# FENCE_SHARDS rows. A lock that is visibly held draws no token (waiters poll
# without queueing on the counter). On a conflict PostgreSQL locks the lock's
# row and evaluates WHERE and SET on its latest version, so two takers never
# both win.
LOCK = f"""
WITH issued AS (
    INSERT INTO qapp_fence (shard, last)
    SELECT $4, 1 WHERE NOT EXISTS (
        SELECT 1 FROM qapp_locks WHERE name = $1 AND expires_at > {_NOW}
    )
    ON CONFLICT (shard) DO UPDATE SET last = qapp_fence.last + 1
    RETURNING last
)
INSERT INTO qapp_locks (name, token, expires_at, fence)
SELECT $1, $2, {_NOW} + $3::float8 * interval '1 second', last FROM issued
ON CONFLICT (name) DO UPDATE SET
    token = excluded.token, expires_at = excluded.expires_at, fence = excluded.fence
WHERE qapp_locks.expires_at <= {_NOW}
RETURNING fence
"""
# Releasing deletes the row: the fence counter, not the row, keeps tokens rising.
UNLOCK = "DELETE FROM qapp_locks WHERE name = $1 AND token = $2"
# A write that happens only while $5 holds the lock (its row is there and its
# lease lasts), in one statement. A newer holder can take the lock only once
# that row has expired or gone, and its token is then another: a superseded
# holder's write is refused, however late. FOR SHARE makes the check hold
# until the write commits: a taker whose LOCK committed first is seen (the
# row's latest version is checked again), and one that comes later waits for
# the write. A plain read would check the statement's snapshot, and a new
# holder's lock and write could both slip in between that read and this write.
SET_FENCED = f"""
WITH held AS (
    SELECT 1 FROM qapp_locks
    WHERE name = $4 AND fence = $5 AND expires_at > {_NOW}
    FOR SHARE
)
INSERT INTO qapp_kv (key, value, expires_at)
SELECT $1, $2::text::json, {_EXPIRES} FROM held
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
RETURNING 1
"""
# Renews only the holder's own lease, and only while it lasts: a lapsed lock
# may have been taken, and is then someone else's.
EXTEND = f"""
UPDATE qapp_locks SET expires_at = {_NOW} + $3::float8 * interval '1 second'
WHERE name = $1 AND token = $2 AND expires_at > {_NOW}
RETURNING 1
"""

NOTIFY = f"SELECT pg_notify('{WAKEUP_CHANNEL}', $1)"

# --- ttl, many keys, prefix scans (qapp.store.backends.postgres_keys) -----------

# NULL for a live key without expiry; no row for a missing or expired one.
TTL = f"""
SELECT EXTRACT(EPOCH FROM qapp_kv.expires_at - {_NOW})::float8 FROM qapp_kv
WHERE key = $1 AND {_LIVE}
"""
GET_MANY = f"SELECT key, value::text FROM qapp_kv WHERE key = ANY($1::bytea[]) AND {_LIVE}"
SET_MANY = f"""
INSERT INTO qapp_kv (key, value, expires_at)
SELECT pair.key, pair.value::json, {_EXPIRES}
FROM unnest($1::bytea[], $2::text[]) AS pair (key, value)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""
# Keyset pages of the keys in [$1, $2), or [$1, ∞) for the *_ALL forms: each
# reads at most the LIMIT rows of the primary key's index, expired ones
# included (and skipped by the caller), so no statement's work grows with
# the table.
SCAN = f"""
SELECT key, {_LIVE} FROM qapp_kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3
"""
SCAN_ALL = f"SELECT key, {_LIVE} FROM qapp_kv WHERE key >= $1 ORDER BY key LIMIT $2"
# The first LIMIT keys of the range, deleted: how many went, and how many
# lived. An array of keys, as in SWEEP, so that they are found by the index.
CLEAR = f"""
WITH gone AS (
    DELETE FROM qapp_kv WHERE key = ANY(ARRAY(
        SELECT key FROM qapp_kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3
    ))
    RETURNING {_LIVE} AS live
)
SELECT count(*), count(*) FILTER (WHERE live) FROM gone
"""
CLEAR_ALL = f"""
WITH gone AS (
    DELETE FROM qapp_kv WHERE key = ANY(ARRAY(
        SELECT key FROM qapp_kv WHERE key >= $1 ORDER BY key LIMIT $2
    ))
    RETURNING {_LIVE} AS live
)
SELECT count(*), count(*) FILTER (WHERE live) FROM gone
"""
