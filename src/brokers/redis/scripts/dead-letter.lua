-- dead-letter.lua: move a message to its queue's dead-letter stream, optionally writing the
-- result backend's DEAD_LETTERED record in the same step (called with a variable number of
-- keys: 3, or 4 with a record). Composed at load time: the text of store-results.lua (backend)
-- becomes the function storeResults(KEYS, ARGV) above this body, and drop-unique-marker.lua the
-- function dropUniqueMarker(stream, unique, id).
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] DLQ stream ${prefix}:dlq:{Q},
-- KEYS[3] unique set ${prefix}:unique:{Q}, KEYS[4] (optional) record key (store-results.lua's
-- KEYS[1])
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] body, ARGV[4] error, ARGV[5] retry count,
-- ARGV[6] DLQ max length (0 = no limit), ARGV[7] task id, ARGV[8] consumer settling it (fenced:
-- nothing happens when another consumer owns the entry), ARGV[9..13] (with KEYS[4])
-- store-results.lua's ARGV for that one record; any further ARGV: the body in pieces, joined
-- here (ARGV[3] is then empty), for a body longer than the server reads in one argument
-- Returns 1 moved, 0 entry not pending for this consumer (taken by another consumer, or still
-- in the stream pending for nobody), 2 pending for nobody and no longer in the stream (settled
-- already: by an earlier copy of this call, or elsewhere), -1 DLQ full. With 0, 2 or -1
-- nothing changed: no record is written, the message stays where it is (the DLQ is never
-- trimmed).
-- Atomic: the checks come before any write, then the record (a script that fails while
-- writing it changes nothing else: the message is redelivered, not lost), then the removal
-- from the work stream and the DLQ append together; failed_at is Redis TIME in ms. With Redis
-- full (maxmemory, noeviction) a dead letter still moves: the first write is an XACK of id 0-0
-- (never exists, never fails), and Redis checks only a script's first write against the limit.
-- Fenced: unless the entry is pending for this consumer (this one may have lost its lease to
-- another consumer, which stores its own outcome), do nothing.
local owner = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if type(owner) == 'table' and owner.err and not string.find(owner.err, 'NOGROUP', 1, true) then
  -- NOPERM, READONLY, WRONGTYPE: fail the call (taken for "not pending", the entry would be
  -- given up unsettled)
  return redis.error_reply(owner.err)
end
if type(owner) ~= 'table' or not owner[1] or owner[1][2] ~= ARGV[8] then
  if type(owner) == 'table' and not owner[1] and #redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2]) == 0 then
    return 2
  end
  return 0
end
-- (composed above: assertType, assert-type.lua) a DLQ of another type would fail the append
-- after the entry's removal: checked first. A unique set of another type holds no marker to
-- drop, and does not stop the move.
assertType(KEYS[2], 'stream')
-- The cap after the fence: a copy of this call sent again after the first moved the message
-- (which may have filled the DLQ) answers 2 ("settled already"), not -1 ("DLQ full, kept").
local maxLen = tonumber(ARGV[6])
if maxLen > 0 and redis.call('XLEN', KEYS[2]) >= maxLen then
  return -1
end
local uniqueIsSet = redis.call('TYPE', KEYS[3])['ok'] == 'set'
redis.call('XACK', KEYS[1], ARGV[1], '0-0') -- exempts the writes below from the memory limit
if KEYS[4] then
  storeResults({ KEYS[4] }, { ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13] })
end
local body = ARGV[3]
local fixed = KEYS[4] and 13 or 8
if #ARGV > fixed then
  body = table.concat(ARGV, '', fixed + 1)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
-- Only the marker the entry holds (its `id` field: a plain entry of the same task id holds none),
-- as ack.lua; an untrusted entry (task id '') drops none.
if uniqueIsSet and ARGV[7] ~= '' then
  dropUniqueMarker(KEYS[1], KEYS[3], ARGV[2])
end
redis.call('XDEL', KEYS[1], ARGV[2])
local t = redis.call('TIME')
local nowMs = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[2], '*', 'data', body, 'error', ARGV[4], 'failed_at', nowMs, 'retry_count', ARGV[5], 'id', ARGV[7])
return 1
