-- Release a lock only if this holder still owns it.
-- KEYS[1]: the lock; ARGV[1]: the holder's random token.
-- A holder whose lease ran out must not delete the next holder's lock.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
