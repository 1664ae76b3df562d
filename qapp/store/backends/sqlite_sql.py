"""The SQL of the SQLite store (:mod:`qapp.store.backends.sqlite`), one statement a name.

Every write is one statement in autocommit mode, its result fetched in the
same call, so that no transaction is ever left open by a cancelled request.
"""

from __future__ import annotations

__all__ = [
    "ADD",
    "ADD_FENCE",
    "DELETE",
    "EXPIRE",
    "EXTEND",
    "FENCE_SCHEMA",
    "GET",
    "INCR",
    "LOCK",
    "SCHEMA",
    "SET",
    "SET_FENCED",
    "SWEEP",
    "SWEEP_LOCKS",
    "UNLOCK",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS qapp_kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS qapp_kv_expiry ON qapp_kv (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS qapp_locks (
    name TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL,
    fence INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""
# A database made before locks had fencing tokens gets the column on open.
ADD_FENCE = "ALTER TABLE qapp_locks ADD COLUMN fence INTEGER NOT NULL DEFAULT 0"
# The store's one fence counter: the last token issued, for any lock name, so
# that a lock's row can go once it is released (see LOCK). Seeded above every
# fence that rows of a database made by an earlier version hold, and bumped by
# the lock's own statement through the triggers (one statement can write one
# table only; a trigger's writes are part of that statement).
FENCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS qapp_fence (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT OR IGNORE INTO qapp_fence (id, last) SELECT 1, coalesce(max(fence), 0) FROM qapp_locks;
CREATE TRIGGER IF NOT EXISTS qapp_fence_issued AFTER INSERT ON qapp_locks BEGIN
    INSERT INTO qapp_fence (id, last) VALUES (1, NEW.fence)
    ON CONFLICT (id) DO UPDATE SET last = max(last, excluded.last);
END;
CREATE TRIGGER IF NOT EXISTS qapp_fence_reissued AFTER UPDATE OF fence ON qapp_locks BEGIN
    INSERT INTO qapp_fence (id, last) VALUES (1, NEW.fence)
    ON CONFLICT (id) DO UPDATE SET last = max(last, excluded.last);
END;
"""

# "Live" means not expired at :now. A dead row is treated as absent everywhere.
_DEAD = "(qapp_kv.expires_at IS NOT NULL AND qapp_kv.expires_at <= :now)"

GET = f"SELECT value FROM qapp_kv WHERE key = :key AND NOT {_DEAD}"
SET = """
INSERT INTO qapp_kv (key, value, expires_at) VALUES (:key, :value, :expires)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""
# Replaces a row only if it is dead; RETURNING yields a row only if we wrote.
ADD = f"""
INSERT INTO qapp_kv (key, value, expires_at) VALUES (:key, :value, :expires)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
WHERE {_DEAD}
RETURNING 1
"""
DELETE = "DELETE FROM qapp_kv WHERE key = :key RETURNING expires_at"
EXPIRE = f"UPDATE qapp_kv SET expires_at = :expires WHERE key = :key AND NOT {_DEAD} RETURNING 1"
# A dead row restarts from the delta with the new expiry; a live one keeps its
# expiry. No row comes back when the live value is not an integer.
INCR = f"""
INSERT INTO qapp_kv (key, value, expires_at) VALUES (:key, :delta, :expires)
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN {_DEAD} THEN excluded.value
                 ELSE CAST(qapp_kv.value AS INTEGER) + :delta END,
    expires_at = CASE WHEN {_DEAD} THEN excluded.expires_at ELSE qapp_kv.expires_at END
WHERE {_DEAD} OR json_type(qapp_kv.value) = 'integer'
RETURNING value
"""
# One batch of the sweep: at most :batch expired rows, found by the expiry index.
SWEEP = f"""
DELETE FROM qapp_kv WHERE key IN (SELECT key FROM qapp_kv WHERE {_DEAD} LIMIT :batch)
RETURNING 1
"""
# The rows of locks whose holder died: a released lock's row is deleted at once.
SWEEP_LOCKS = "DELETE FROM qapp_locks WHERE expires_at <= :now"
# Taking the lock issues the store's next fencing token in the same statement
# (the trigger records it), so tokens rise for every name with no row kept per name.
LOCK = """
INSERT INTO qapp_locks (name, token, expires_at, fence)
VALUES (:name, :token, :expires, coalesce((SELECT last FROM qapp_fence WHERE id = 1), 0) + 1)
ON CONFLICT (name) DO UPDATE SET
    token = excluded.token, expires_at = excluded.expires_at, fence = excluded.fence
WHERE qapp_locks.expires_at <= :now
RETURNING fence
"""
# Releasing deletes the row: the fence counter, not the row, keeps tokens rising.
UNLOCK = "DELETE FROM qapp_locks WHERE name = :name AND token = :token"
# A write that happens only while :fence holds the lock (its row is there and
# its lease lasts), in one statement. A newer holder can take the lock only
# once that row has expired or gone, and its token is then another: a late
# write of this holder is refused for ever after.
SET_FENCED = """
INSERT INTO qapp_kv (key, value, expires_at)
SELECT :key, :value, :expires WHERE EXISTS (
    SELECT 1 FROM qapp_locks WHERE name = :name AND fence = :fence AND expires_at > :now
)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
RETURNING 1
"""
# Renews only the holder's own lease, and only while it lasts: a lapsed lock
# may have been taken, and is then someone else's.
EXTEND = """
UPDATE qapp_locks SET expires_at = :expires
WHERE name = :name AND token = :token AND expires_at > :now
RETURNING 1
"""
