-- cleanup-workers.lua: forget workers whose last heartbeat is older than the stale time.
-- KEYS[1] workers sorted set ${prefix}:workers
-- ARGV[1] stale ms
-- Returns the removed worker ids (the caller deletes their heartbeat keys).
-- Atomic: read and removal by the Redis clock in one step, so a concurrent cleanup does not
-- report the same worker twice.
local t = redis.call('TIME')
local nowMs = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = nowMs - tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff)
if #ids > 0 then
  redis.call('ZREM', KEYS[1], unpack(ids))
end
return ids
