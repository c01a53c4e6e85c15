-- retry.lua: replace a message by its next attempt on the same queue.
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] delayed zset ${prefix}:delayed:{Q},
-- KEYS[3] delayed bodies ${prefix}:delayed-data:{Q}
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] new body, ARGV[4] delay ms, ARGV[5] task id,
-- ARGV[6] consumer settling it (fenced: nothing happens when another consumer owns the entry)
-- Returns 1 when done, 0 when the entry was no longer pending (settled elsewhere: nothing added).
-- Atomic: the old entry is removed and the new attempt enqueued in one step (never both
-- lost, never both kept); a second settle of the same entry (lease lost, resent command)
-- adds nothing. The due time comes from Redis TIME.
-- Fenced: when another consumer owns the entry now (this one lost its lease), do nothing.
local owner = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if type(owner) == 'table' and owner.err and not string.find(owner.err, 'NOGROUP', 1, true) then
  -- NOPERM, READONLY, WRONGTYPE: fail the call (taken for "not pending", the entry would be
  -- given up unsettled)
  return redis.error_reply(owner.err)
end
if type(owner) == 'table' and owner[1] and owner[1][2] ~= ARGV[6] then
  return 0
end
-- (composed above: assertType, assert-type.lua) a delayed set or bodies hash of another type
-- would fail the new attempt's enqueue after the old entry's removal: checked first
if tonumber(ARGV[4]) > 0 then
  assertType(KEYS[2], 'zset')
  assertType(KEYS[3], 'hash')
else
  assertType(KEYS[1], 'stream') -- (a stream with no id left)
end
local acked = redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
if type(acked) == 'table' and acked.err and not string.find(acked.err, 'NOGROUP', 1, true) then
  -- e.g. READONLY (a demoted primary): an error, so the client reconnects and sends it again,
  -- never "settled elsewhere" (the entry would stay pending and run again at once)
  return redis.error_reply(acked.err)
end
if acked ~= 1 then
  return 0
end
redis.call('XDEL', KEYS[1], ARGV[2])
local delayMs = tonumber(ARGV[4])
if delayMs > 0 then
  local t = redis.call('TIME')
  -- rounded up: the due time is never earlier than now + delay (the mover rounds down)
  local nowMs = tonumber(t[1]) * 1000 + math.ceil(tonumber(t[2]) / 1000)
  addDelayed(KEYS[2], KEYS[3], ARGV[5], nowMs + delayMs, ARGV[3])
else
  redis.call('XADD', KEYS[1], '*', 'data', ARGV[3], 'id', ARGV[5])
end
return 1
