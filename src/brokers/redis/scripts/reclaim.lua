-- reclaim.lua: take over entries whose lease expired (their consumer stopped renewing).
-- KEYS[1] stream ${prefix}:stream:{Q}
-- ARGV[1] group, ARGV[2] this consumer, ARGV[3] min idle ms, ARGV[4] cursor, ARGV[5] count
-- Returns { next cursor, { id, fields, deliveryCount, id, fields, deliveryCount, ... } }.
-- Atomic: the delivery counter is read in the same step as the claim, so the reported
-- deliveryCount is the real one (previous deliveries + this one) for the poison check.
local res = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {}
for _, entry in ipairs(res[2]) do
  if entry then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    out[#out + 1] = entry[1]
    out[#out + 1] = entry[2]
    out[#out + 1] = p[1] and p[1][4] or 1
  end
end
return { res[1], out }
