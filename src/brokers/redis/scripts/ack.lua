-- ack.lua: a message is done; remove it for good.
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] unique set ${prefix}:unique:{Q}
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] task id, ARGV[4] consumer settling it
-- Returns 1 when the entry was pending and is now acknowledged, else 0 (already settled, or
-- owned by another consumer after a lost lease: fenced, nothing changes).
-- Atomic: XACK and XDEL together (Redis 7.0 has no XACKDEL), so an acknowledged entry never
-- stays in the stream (no history growth, no replay if the group is recreated at 0); the
-- unique marker is dropped only by the settle that actually removed the entry.
-- Fenced: when another consumer owns the entry now (this one lost its lease), do nothing.
local owner = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if type(owner) == 'table' and owner[1] and owner[1][2] ~= ARGV[4] then
  return 0
end
local acked = redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
if type(acked) ~= 'number' then
  acked = 0
end
redis.call('XDEL', KEYS[1], ARGV[2])
if acked == 1 then
  redis.call('SREM', KEYS[2], ARGV[3])
end
return acked
