-- read-after-acks.lua: settle a batch of acks, then read up to ARGV[1] new entries of the stream
-- for the same consumer: one call where the acks and the consumer's next non-blocking
-- XREADGROUP would be two round trips (a worker whose slots just freed sends both at once).
-- Composed at load time: the acking script (ack.lua, or ack-with-records.lua with its two
-- functions) becomes the function settle(KEYS, ARGV) above this body.
-- KEYS: the acking script's KEYS, the stream among them
-- ARGV[1] read count, ARGV[2] index of the stream in KEYS, ARGV[3] group, ARGV[4] consumer,
-- ARGV[5..] the acking script's ARGV
-- Returns {acks, entries[, error]}: acks is the acking script's result; entries the new entries
-- as XREADGROUP lists them ({id, {field, value, ...}}, ...), empty when none is waiting; error
-- the read's error message (e.g. NOGROUP when the group is gone), the acks stand regardless.
-- The acks come first: a script that fails while acking reads nothing.
local settleArgv = {}
for i = 5, #ARGV do
  settleArgv[#settleArgv + 1] = ARGV[i]
end
local acks = settle(KEYS, settleArgv)
local stream = KEYS[tonumber(ARGV[2])]
local reply = redis.pcall('XREADGROUP', 'GROUP', ARGV[3], ARGV[4], 'COUNT', ARGV[1], 'STREAMS', stream, '>')
if type(reply) == 'table' and reply.err then
  return { acks, {}, reply.err }
end
if not reply then
  return { acks, {} }
end
return { acks, reply[1][2] }
