-- cleanup-workers.lua: forget workers whose last heartbeat is older than the stale time, at most
-- ARGV[3] of them per call (the caller calls again while a call returns that many).
-- KEYS[1] workers sorted set ${prefix}:workers
-- ARGV[1] stale ms, ARGV[2] heartbeat key prefix ${prefix}:heartbeat:, ARGV[3] most workers
-- Returns the removed worker ids.
-- Atomic: read and removal by the Redis clock in one step, so a concurrent cleanup does not
-- report the same worker twice, and a heartbeat written after the call (a new key, a new score)
-- is never deleted by it. The heartbeat keys are named from ARGV[2], not declared in KEYS: the
-- result backend runs on a single Redis node.
local t = redis.call('TIME')
local nowMs = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = nowMs - tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff, 'LIMIT', 0, tonumber(ARGV[3]))
if #ids > 0 then
  redis.call('ZREM', KEYS[1], unpack(ids))
  local keys = {}
  for i, id in ipairs(ids) do
    keys[i] = ARGV[2] .. id
  end
  redis.call('DEL', unpack(keys))
end
return ids
