-- pending-for-nobody.lua: the body of pendingForNobody(stream, group, id), composed at load time
-- into the acking scripts (see ack.lua): true when entry `id` is in no consumer's pending list
-- (settled already, or lost with its group); false when a consumer holds it. A missing group
-- holds nothing (true). Any other error (NOPERM, READONLY, WRONGTYPE) fails the call: read as
-- "pending for nobody", the entry would be deleted unsettled.
local owner = redis.pcall('XPENDING', stream, group, id, id, 1)
if type(owner) == 'table' and owner.err and not string.find(owner.err, 'NOGROUP', 1, true) then
  error(owner)
end
return not (type(owner) == 'table' and owner[1])
