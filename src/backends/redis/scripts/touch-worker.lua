-- touch-worker.lua: record a worker's heartbeat time by the Redis clock.
-- KEYS[1] workers sorted set ${prefix}:workers (member = worker id, score = last heartbeat ms)
-- ARGV[1] worker id
-- Returns the Redis time in ms.
-- A script only to read TIME on the server (workers' clocks may be skewed, C17).
local t = redis.call('TIME')
local nowMs = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], nowMs, ARGV[1])
return nowMs
