-- release.lua: give an entry back so another consumer can take it at once.
-- KEYS[1] stream ${prefix}:stream:{Q}
-- ARGV[1] group, ARGV[2] this consumer, ARGV[3] entry id, ARGV[4] idle ms to set (= claim min
-- idle), ARGV[5] "1" to count this delivery (the task ran; its settling failed), else "0",
-- ARGV[6] the delivery count the consumer was handed the entry with, ARGV[7] the consumer that
-- holds given-back entries (RELEASED_CONSUMER in redis-keys.ts)
-- Returns 1 released, 0 not owned by this consumer (nothing changed).
-- The entry stays in the PEL, owned by ARGV[7], and looks expired (IDLE), so the next
-- XAUTOCLAIM of any consumer takes it. Owned by ARGV[7], not by this consumer: a consumer that
-- gave its entries back owns none, and can leave the group when it closes (while it owned them,
-- deleting it would have dropped them from the PEL, where no claim finds them). Not counted: RETRYCOUNT count-1, so that claim brings the counter back to its
-- current value (no delivery burnt), but never below the count it was handed with, less one:
-- the same call applied twice (the client sends it again after a lost reply) takes one off
-- once. Counted: the counter stays, that claim adds one.
-- A counter past 2^53 (set by hand: XCLAIM ... RETRYCOUNT) is not exact as a Lua number and
-- would be sent back as "9.2e+18", which XCLAIM refuses: such a counter is left as it is.
-- Atomic: owner check and XCLAIM together (never touches a stolen entry).
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] or p[1][2] ~= ARGV[2] then
  return 0
end
local count = tonumber(p[1][4])
if count >= 9007199254740992 then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[7], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
  return 1
end
if ARGV[5] ~= '1' then
  count = math.max(count - 1, (tonumber(ARGV[6]) or 1) - 1, 0)
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[7], 0, ARGV[3], 'IDLE', ARGV[4], 'RETRYCOUNT', count, 'JUSTID')
return 1
