-- Take a lock and issue its next fencing token, as one step.
-- KEYS[1]: the lock; KEYS[2]: its fence (the last token issued for the name).
-- ARGV[1]: the holder's random token; ARGV[2]: the lease in ms.
-- Returns the new fencing token, or 0 if someone holds the lock. The fence
-- never expires: forgetting it would let tokens start again from 1. On
-- Cluster both keys carry the lock name's hash tag, so they share a slot.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return redis.call('INCR', KEYS[2])
end
return 0
