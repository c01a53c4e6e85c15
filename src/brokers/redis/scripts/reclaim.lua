-- reclaim.lua: take over entries whose lease expired (their consumer stopped renewing).
-- KEYS[1] stream ${prefix}:stream:{Q}
-- ARGV[1] group, ARGV[2] this consumer, ARGV[3] min idle ms, ARGV[4] cursor (pending entry id
-- to look from; "0-0" at the start), ARGV[5] count (most entries to take)
-- Returns { next cursor ("0-0" once the pending list was looked at to its end),
-- { id, fields, deliveryCount, id, fields, deliveryCount, ... } }.
-- XPENDING's IDLE filter finds the expired entries however many live ones come before them
-- (XAUTOCLAIM looks at no more than ten times its COUNT per call, so a worker with one free slot
-- would crawl through a busy fleet's pending list ten entries per call). The scan is in Redis's
-- own code, over the pending list, which is bounded by the fleet's in-flight entries.
-- Atomic: the entries are claimed in the step that found them, and the delivery counter of
-- each (previous deliveries + this one) is the real one for the poison check.
-- Composed at load time below claimEntries (claim-entries.lua).
local expired = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', ARGV[5])
if #expired == 0 then
  return { '0-0', {} }
end
local ids, counts = {}, {}
for i, p in ipairs(expired) do
  ids[i] = p[1]
  counts[p[1]] = p[4]
end
local cursor = '0-0'
if #expired >= tonumber(ARGV[5]) then
  cursor = '(' .. ids[#ids]
end
return { cursor, claimEntries(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ids, counts) }
