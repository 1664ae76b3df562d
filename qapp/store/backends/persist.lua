-- Make a live key permanent; 1 if it was there. PERSIST alone answers 0 for a
-- key that had no ttl, so EXISTS decides, in the same step.
-- KEYS[1]: the key.
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('PERSIST', KEYS[1])
    return 1
end
return 0
