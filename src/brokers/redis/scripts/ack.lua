-- ack.lua: messages are done; remove them for good. Acks of one consumer and one queue issued in
-- the same event-loop turn travel together (one call for the whole batch).
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] unique set ${prefix}:unique:{Q}
-- ARGV[1] group, ARGV[2] consumer settling them, then pairs: ARGV[2i+1] entry id, ARGV[2i+2] task id
-- Returns one number per pair: 1 when the entry was pending and is now acknowledged, else 0
-- (already settled, or owned by another consumer after a lost lease: fenced, nothing changes).
-- Atomic: XACK and XDEL together (Redis 7.0 has no XACKDEL), so an acknowledged entry never
-- stays in the stream (no history growth, no replay if the group is recreated at 0); the
-- unique marker is dropped only by the settle that actually removed the entry.
local results = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local result = 0
  local owner = redis.pcall('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if not (type(owner) == 'table' and owner[1] and owner[1][2] ~= ARGV[2]) then
    local acked = redis.pcall('XACK', KEYS[1], ARGV[1], id)
    if type(acked) ~= 'number' then
      acked = 0
    end
    redis.call('XDEL', KEYS[1], id)
    if acked == 1 then
      redis.call('SREM', KEYS[2], ARGV[i + 1])
    end
    result = acked
  end
  results[#results + 1] = result
end
return results
