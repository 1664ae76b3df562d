-- Write a value only while the writer's fencing token is the lock's latest.
-- KEYS[1]: the lock's fence; KEYS[2]: the key to write.
-- ARGV[1]: the writer's token; ARGV[2]: the value; ARGV[3]: expiry in ms, or "".
-- Returns 1 if written, 0 if a newer token was issued (or the fence is gone).
-- On Cluster both keys must share a slot: name the key and the lock with one
-- hash tag.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
if ARGV[3] ~= '' then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
    redis.call('SET', KEYS[2], ARGV[2])
end
return 1
