-- owner-of.lua: the body of ownerOf(stream, group, id), composed at load time into the acking
-- scripts (see ack.lua) and into holderOf (holder-of.lua): the consumer whose pending list holds
-- entry `id`, or false when none does (settled already, or lost with its group: a missing group
-- holds nothing). Any other error (NOPERM, READONLY, WRONGTYPE) fails the call: read as
-- "pending for nobody", the entry would be deleted unsettled.
local owner = redis.pcall('XPENDING', stream, group, id, id, 1)
if type(owner) == 'table' and owner.err then
  if not string.find(owner.err, 'NOGROUP', 1, true) then
    error(owner)
  end
  return false
end
return owner[1] and owner[1][2] or false
