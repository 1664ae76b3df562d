-- Take a lock and issue its fencing token, as one step.
-- KEYS[1]: the lock; KEYS[2]: the store's fence counter (on Cluster, the
-- counter of the lock's hash slot, so both keys share a slot).
-- ARGV[1]: the holder's random token; ARGV[2]: the lease in ms.
-- Returns the new fencing token, or 0 if someone holds the lock. One counter
-- serves every lock name, so each name's tokens rise with nothing kept per
-- name: the lock's key expires with its lease. The counter never expires.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return redis.call('INCR', KEYS[2])
end
return 0
