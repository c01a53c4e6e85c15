-- touch-worker.lua: write a worker's heartbeat and record its time by the Redis clock, and
-- forget workers whose heartbeat has expired.
-- KEYS[1] workers sorted set ${prefix}:workers (member = worker id, score = last heartbeat ms)
-- ARGV[1] worker id, ARGV[2] heartbeat key prefix ${prefix}:heartbeat:, ARGV[3] the heartbeat
-- (JSON), ARGV[4] its TTL in seconds
-- Returns the Redis time in ms.
-- The heartbeat key and its time in one step: a cleanup-workers.lua that ran between the two
-- (of a worker back after a long silence, its old time past the stale limit) deleted the key
-- just written, and the worker was missing from the active workers until its next heartbeat.
-- A script to read TIME on the server (workers' clocks may be skewed, C17). It also drops, of
-- the ten workers silent longest, those whose heartbeat key is gone (expired: the worker is not
-- active): without it, a fleet of short-lived workers (batch jobs, scale to zero, a crash loop)
-- would add a member per start that only a worker living past its first cleanup round removes.
-- A worker whose key is gone but whose next heartbeat comes is added again by it. The heartbeat
-- keys are named from ARGV[2], not declared in KEYS: the result backend runs on a single Redis
-- node.
redis.call('SET', ARGV[2] .. ARGV[1], ARGV[3], 'EX', ARGV[4])
local t = redis.call('TIME')
local nowMs = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], nowMs, ARGV[1])
local gone = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, 9)) do
  if id ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. id) == 0 then
    gone[#gone + 1] = id
  end
end
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
end
return nowMs
