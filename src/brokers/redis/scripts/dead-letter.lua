-- dead-letter.lua: move a message to its queue's dead-letter stream.
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] DLQ stream ${prefix}:dlq:{Q},
-- KEYS[3] unique set ${prefix}:unique:{Q}
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] body, ARGV[4] error, ARGV[5] retry count,
-- ARGV[6] DLQ max length (0 = no limit), ARGV[7] task id, ARGV[8] consumer settling it (fenced:
-- nothing happens when another consumer owns the entry)
-- Returns 1 moved, 0 entry no longer pending (settled elsewhere), -1 DLQ full (nothing changed:
-- the message stays in the work stream; the DLQ is never trimmed).
-- Atomic: removal from the work stream and the DLQ append happen together, with the DLQ
-- limit checked in the same step; failed_at is Redis TIME in ms.
local maxLen = tonumber(ARGV[6])
if maxLen > 0 and redis.call('XLEN', KEYS[2]) >= maxLen then
  return -1
end
-- Fenced: when another consumer owns the entry now (this one lost its lease), do nothing.
local owner = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if type(owner) == 'table' and owner[1] and owner[1][2] ~= ARGV[8] then
  return 0
end
local acked = redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked ~= 1 then
  return 0
end
redis.call('XDEL', KEYS[1], ARGV[2])
local t = redis.call('TIME')
local nowMs = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[2], '*', 'data', ARGV[3], 'error', ARGV[4], 'failed_at', nowMs, 'retry_count', ARGV[5], 'id', ARGV[7])
redis.call('SREM', KEYS[3], ARGV[7])
return 1
