-- claim-entries.lua: the body of claimEntries(stream, group, consumer, minIdle, ids, counts, keep),
-- composed at load time into the claiming scripts (reclaim.lua, recover-own.lua): claims the
-- pending entries `ids` for `consumer` (XCLAIM, idle at least `minIdle` ms), `counts[id]` being
-- an entry's delivery count before the claim. Each delivery count grows by one (a new
-- delivery), except for the ids in the set `keep` (may be nil), whose count stays (RETRYCOUNT:
-- the delivery the count holds is this one).
-- Returns { id, fields, deliveryCount, id, fields, deliveryCount, ... }.
-- A pending entry gone from the stream (trimmed or deleted while held) has nothing to deliver:
-- XCLAIM does not return it, and it leaves the pending list instead of being claimed forever.
-- An entry XCLAIM skipped for another reason (not idle enough) is left as it is.
local bumped, claimed = {}, {}
for _, id in ipairs(ids) do
  if keep and keep[id] and counts[id] >= 9007199254740992 then
    -- a count past 2^53 (set by hand) is not exact here, and XCLAIM refuses "9.2e+18": claimed
    -- without touching its count (JUSTID counts no delivery), its fields read apart
    local one = redis.call('XCLAIM', stream, group, consumer, minIdle, id, 'JUSTID')
    claimed[#claimed + 1] = (one[1] and redis.call('XRANGE', stream, id, id)[1]) or false
  elseif keep and keep[id] then
    local one = redis.call('XCLAIM', stream, group, consumer, minIdle, id, 'RETRYCOUNT', counts[id])
    claimed[#claimed + 1] = one[1] or false
  else
    bumped[#bumped + 1] = id
  end
end
if #bumped > 0 then
  for _, entry in ipairs(redis.call('XCLAIM', stream, group, consumer, minIdle, unpack(bumped))) do
    claimed[#claimed + 1] = entry
  end
end
local out, taken = {}, {}
for _, entry in ipairs(claimed) do
  if entry then
    local id = entry[1]
    taken[id] = true
    out[#out + 1] = id
    out[#out + 1] = entry[2]
    out[#out + 1] = counts[id] + ((keep and keep[id]) and 0 or 1)
  end
end
for _, id in ipairs(ids) do
  if not taken[id] and #redis.call('XRANGE', stream, id, id) == 0 then
    redis.call('XACK', stream, group, id)
  end
end
return out
