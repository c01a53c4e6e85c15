-- pending-of.lua: the body of pendingOf(stream, group, consumer, low, high), composed at load
-- time into the acking scripts (see ack.lua): the ids of `consumer`'s pending entries between
-- the ids `low` and `high`, as a set ({ [id] = true }). The consumer holds few entries (at most
-- twice its concurrency, plus its read-ahead), so the count bound is never reached.
local mine = {}
local listed = redis.pcall('XPENDING', stream, group, low, high, 100000, consumer)
if type(listed) == 'table' then
  for _, entry in ipairs(listed) do
    mine[entry[1]] = true
  end
end
return mine
