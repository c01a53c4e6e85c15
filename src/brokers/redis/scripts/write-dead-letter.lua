-- write-dead-letter.lua: append an already acknowledged message to a queue's DLQ (an
-- at_most_once task that failed: there is no pending entry left to move), optionally writing
-- the result backend's DEAD_LETTERED record in the same step (called with a variable number of
-- keys: 2, or 3 with a record). Composed at load time: the text of store-results.lua (backend)
-- becomes the function storeResults(KEYS, ARGV) above this body.
-- KEYS[1] DLQ stream ${prefix}:dlq:{Q}, KEYS[2] this call's receipt ${prefix}:sent:{Q}:<token>,
-- KEYS[3] (optional) record key (store-results.lua's KEYS[1])
-- ARGV[1] body, ARGV[2] error, ARGV[3] retry count, ARGV[4] DLQ max length (0 = no limit),
-- ARGV[5] task id, ARGV[6] receipt TTL ms, ARGV[7..11] (with KEYS[3]) store-results.lua's ARGV
-- for that one record; any further ARGV: the body in pieces, joined here (ARGV[1] is then
-- empty), for a body longer than the server reads in one argument
-- Returns 1 written, -1 DLQ full (nothing written, no record either; the DLQ is never
-- trimmed).
-- A copy of the call sent again (the client dropped a connection whose reply it lacked; the
-- first copy ran) finds the receipt and answers 1 without appending the dead letter twice.
-- Atomic: the limit check and the writes cannot interleave with another writer, and the entry
-- and its record are written together (a worker killed between two calls left a DLQ entry
-- whose record never said DEAD_LETTERED); the record first, so a script that fails while
-- writing it appends nothing. failed_at is Redis TIME in ms.
-- Redis full (maxmemory, noeviction): the first write is an XACK of id 0-0, which never
-- exists and never fails, and Redis checks only a script's first write against the limit: the
-- dead letter (whose message was acknowledged already) and its record still go through.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 1
end
local maxLen = tonumber(ARGV[4])
if maxLen > 0 and redis.call('XLEN', KEYS[1]) >= maxLen then
  return -1
end
-- (composed above: assertType, assert-type.lua) a DLQ of another type would fail the append
-- after the record: checked first
assertType(KEYS[1], 'stream')
redis.call('XACK', KEYS[1], 'x', '0-0') -- exempts the writes below from the memory limit
if KEYS[3] then
  storeResults({ KEYS[3] }, { ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11] })
end
local body = ARGV[1]
local fixed = KEYS[3] and 11 or 6
if #ARGV > fixed then
  body = table.concat(ARGV, '', fixed + 1)
end
local t = redis.call('TIME')
local nowMs = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[1], '*', 'data', body, 'error', ARGV[2], 'failed_at', nowMs, 'retry_count', ARGV[3], 'id', ARGV[5])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[6])
return 1
