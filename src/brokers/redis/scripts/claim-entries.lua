-- claim-entries.lua: the body of claimEntries(stream, group, consumer, minIdle, ids, counts),
-- composed at load time into the claiming scripts (reclaim.lua, recover-own.lua): claims the
-- pending entries `ids` for `consumer` (XCLAIM, idle at least `minIdle` ms; each delivery
-- count grows by one), `counts[id]` being an entry's delivery count before the claim.
-- Returns { id, fields, deliveryCount, id, fields, deliveryCount, ... }.
-- A pending entry gone from the stream (trimmed or deleted while held) has nothing to deliver:
-- XCLAIM does not return it, and it leaves the pending list instead of being claimed forever.
local out, taken = {}, {}
for _, entry in ipairs(redis.call('XCLAIM', stream, group, consumer, minIdle, unpack(ids))) do
  if entry then
    taken[entry[1]] = true
    out[#out + 1] = entry[1]
    out[#out + 1] = entry[2]
    out[#out + 1] = counts[entry[1]] + 1
  end
end
for _, id in ipairs(ids) do
  if not taken[id] then
    redis.call('XACK', stream, group, id)
  end
end
return out
