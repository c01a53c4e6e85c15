-- write-dead-letter.lua: append an already acknowledged message to a queue's DLQ
-- (an at_most_once task that failed: there is no pending entry left to move).
-- KEYS[1] DLQ stream ${prefix}:dlq:{Q}
-- ARGV[1] body, ARGV[2] error, ARGV[3] retry count, ARGV[4] DLQ max length (0 = no limit),
-- ARGV[5] task id
-- Returns 1 written, -1 DLQ full (nothing written; the DLQ is never trimmed).
-- Atomic: the limit check and the append cannot interleave with another writer; failed_at
-- is Redis TIME in ms.
local maxLen = tonumber(ARGV[4])
if maxLen > 0 and redis.call('XLEN', KEYS[1]) >= maxLen then
  return -1
end
local t = redis.call('TIME')
local nowMs = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[1], '*', 'data', ARGV[1], 'error', ARGV[2], 'failed_at', nowMs, 'retry_count', ARGV[3], 'id', ARGV[5])
return 1
