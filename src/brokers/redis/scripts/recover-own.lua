-- recover-own.lua: after a reconnect, take back this consumer's pending entries that it does not
-- know of: entries that a read handed to it while its reply was lost with the connection (or
-- that the read sent again after the reconnect replaced). Without this they would wait for their
-- lease to expire (claimMinIdle) before any consumer ran them.
-- KEYS[1] stream ${prefix}:stream:{Q}
-- ARGV[1] group, ARGV[2] this consumer, ARGV[3] count (most entries to take), ARGV[4] claim min
-- idle ms, ARGV[5..] ids of the entries this consumer holds (handed out and not settled, or
-- read ahead): left alone
-- Returns { more (1 when the consumer may hold more such entries, else 0),
-- { id, fields, deliveryCount, id, fields, deliveryCount, ... } } (as reclaim.lua).
-- Atomic. An entry idle for less than the claim min idle keeps its delivery count: the lost
-- read counted the delivery this one makes. One idle for longer (its lease expired) counts one
-- more, as a reclaim would.
-- Composed at load time below claimEntries (claim-entries.lua).
local known = {}
for i = 5, #ARGV do
  known[ARGV[i]] = true
end
local want = tonumber(ARGV[3])
local minIdle = tonumber(ARGV[4])
local listLimit = want + #ARGV - 4
local listed = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', listLimit, ARGV[2])
local ids, counts, keep = {}, {}, {}
for _, p in ipairs(listed) do
  if not known[p[1]] and #ids < want then
    ids[#ids + 1] = p[1]
    counts[p[1]] = p[4]
    if p[3] < minIdle then
      keep[p[1]] = true
    end
  end
end
local more = #listed >= listLimit and 1 or 0
if #ids == 0 then
  return { more, {} }
end
return { more, claimEntries(KEYS[1], ARGV[1], ARGV[2], 0, ids, counts, keep) }
