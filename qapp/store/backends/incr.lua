-- Atomic increment that sets an expiry only when it creates the key.
-- KEYS[1]: the counter; ARGV[1]: the delta; ARGV[2]: expiry in ms, or "" for none.
-- Returns the new value. Runs as one unit: no client sees the key between
-- the INCRBY and the PEXPIRE.
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and ARGV[2] ~= '' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
