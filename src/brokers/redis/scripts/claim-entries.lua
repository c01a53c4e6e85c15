-- claim-entries.lua: the body of claimEntries(stream, group, consumer, minIdle, ids, counts, bump),
-- composed at load time into the claiming scripts (reclaim.lua, recover-own.lua): claims the
-- pending entries `ids` for `consumer` (XCLAIM, idle at least `minIdle` ms), `counts[id]` being
-- an entry's delivery count before the claim. With `bump` each delivery count grows by one (a
-- new delivery); without, it is kept (RETRYCOUNT: the delivery the count holds is this one).
-- Returns { id, fields, deliveryCount, id, fields, deliveryCount, ... }.
-- A pending entry gone from the stream (trimmed or deleted while held) has nothing to deliver:
-- XCLAIM does not return it, and it leaves the pending list instead of being claimed forever.
local claimed = {}
if bump then
  claimed = redis.call('XCLAIM', stream, group, consumer, minIdle, unpack(ids))
else
  for _, id in ipairs(ids) do
    local one = redis.call('XCLAIM', stream, group, consumer, minIdle, id, 'RETRYCOUNT', counts[id])
    claimed[#claimed + 1] = one[1] or false
  end
end
local out, taken = {}, {}
for _, entry in ipairs(claimed) do
  if entry then
    taken[entry[1]] = true
    out[#out + 1] = entry[1]
    out[#out + 1] = entry[2]
    out[#out + 1] = counts[entry[1]] + (bump and 1 or 0)
  end
end
for _, id in ipairs(ids) do
  if not taken[id] then
    redis.call('XACK', stream, group, id)
  end
end
return out
