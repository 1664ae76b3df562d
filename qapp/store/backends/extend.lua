-- Renew a lock's lease only if this holder still owns it.
-- KEYS[1]: the lock; ARGV[1]: the holder's random token; ARGV[2]: the new lease in ms.
-- A lapsed lock is gone (or someone else's): it is not renewed, and 0 says so.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
