-- release.lua: give an unstarted entry back so another consumer can take it at once.
-- KEYS[1] stream ${prefix}:stream:{Q}
-- ARGV[1] group, ARGV[2] this consumer, ARGV[3] entry id, ARGV[4] idle ms to set (= claim min idle)
-- Returns 1 released, 0 not owned by this consumer (nothing changed).
-- The entry stays in the PEL but looks expired (IDLE), so the next XAUTOCLAIM of any consumer
-- takes it; RETRYCOUNT count-1 means that claim brings the counter back to its current value
-- (no delivery burnt). Atomic: owner check and XCLAIM together (never touches a stolen entry).
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] or p[1][2] ~= ARGV[2] then
  return 0
end
local count = math.max(tonumber(p[1][4]) - 1, 0)
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'RETRYCOUNT', count, 'JUSTID')
return 1
