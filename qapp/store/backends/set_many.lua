-- Write many keys as one step, each with the same expiry.
-- KEYS: the keys; ARGV[1]: expiry in ms, or "" for none; ARGV[i + 1]: KEYS[i]'s value.
-- Returns how many keys it wrote. On Cluster the keys must share a slot: the
-- store sends one script per slot.
for i, key in ipairs(KEYS) do
    if ARGV[1] ~= '' then
        redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
    else
        redis.call('SET', key, ARGV[i + 1])
    end
end
return #KEYS
