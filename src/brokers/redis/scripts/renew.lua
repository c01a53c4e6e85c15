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
  -- One argument table: unpack() in the middle of an argument list yields only its first value.
  local args = { 'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0 }
  for _, id in ipairs(owned) do
    args[#args + 1] = id
  end
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
end
return lost
