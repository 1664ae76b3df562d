-- Write a value only while the writer still holds the lock.
-- KEYS[1]: the lock; KEYS[2]: the key to write.
-- ARGV[1]: the holder's random token; ARGV[2]: the value; ARGV[3]: expiry in ms, or "".
-- Returns 1 if written, 0 if the lock was released, lapsed or has another
-- holder. A newer holder can take the lock only once this one's key is gone,
-- and holds it with another token: a superseded holder's write is refused,
-- however late it comes. On Cluster both keys must share a slot: name the
-- key and the lock with one hash tag.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
if ARGV[3] ~= '' then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
    redis.call('SET', KEYS[2], ARGV[2])
end
return 1
