-- purge-dlq.lua: delete a DLQ stream and say how many entries it had.
-- KEYS[1] DLQ stream ${prefix}:dlq:{Q}
-- Returns the number of entries deleted. Atomic so the count matches what was deleted; UNLINK
-- frees a large DLQ's memory in the background instead of blocking Redis for it.
local n = redis.call('XLEN', KEYS[1])
redis.call('UNLINK', KEYS[1])
return n
