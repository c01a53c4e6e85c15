-- renew.lua: renew the leases of this consumer's unsettled entries.
-- KEYS[1] stream ${prefix}:stream:{Q}
-- ARGV[1] group, ARGV[2] this consumer, ARGV[3..n] entry ids
-- Returns the ids this consumer no longer owns (settled, or reclaimed by another consumer).
-- Atomic: the owner check and the XCLAIM (min idle 0, JUSTID: resets idle without counting a
-- delivery) happen together, so a renewal never steals an entry another consumer reclaimed.
local owned, lost = {}, {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    owned[#owned + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
  end
end
if #owned > 0 then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(owned), 'JUSTID')
end
return lost
