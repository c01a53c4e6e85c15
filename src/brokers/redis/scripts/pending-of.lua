-- pending-of.lua: the body of pendingOf(stream, group, consumer, low, high), composed at load
-- time into the acking scripts (see ack.lua): the ids of `consumer`'s pending entries between
-- the ids `low` and `high`, as a set ({ [id] = true }). The consumer holds few entries (at most
-- twice its concurrency, plus its read-ahead), so the count bound is never reached.
local mine = {}
local listed = redis.pcall('XPENDING', stream, group, low, high, 100000, consumer)
if type(listed) == 'table' and listed.err then
  -- No group (the stream was deleted): nothing is pending. Any other error (NOPERM, READONLY,
  -- WRONGTYPE) fails the call: read as "not pending", the entries would be deleted unsettled.
  if not string.find(listed.err, 'NOGROUP', 1, true) then
    error(listed)
  end
elseif type(listed) == 'table' then
  for _, entry in ipairs(listed) do
    mine[entry[1]] = true
  end
end
return mine
