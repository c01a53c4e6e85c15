-- holder-of.lua: the body of holderOf(stream, group, consumer, id), composed at load time into
-- renew.lua and lease-state.lua: who holds entry `id` now.
--   0: pending for `consumer`;
--   1: pending for another consumer, or pending for nobody but still in the stream (its group
--      was deleted and re-created, and delivers it again): someone else runs it;
--   2: pending for nobody and gone from the stream: settled by a consumer that reclaimed it,
--      or lost in a restart without persistence. Nobody will run it again.
-- A missing group holds nothing. Any other error (NOPERM, READONLY, WRONGTYPE) fails the call.
local owner = redis.pcall('XPENDING', stream, group, id, id, 1)
if type(owner) == 'table' and owner.err then
  if not string.find(owner.err, 'NOGROUP', 1, true) then
    error(owner)
  end
  owner = {}
end
if owner[1] then
  if owner[1][2] == consumer then
    return 0
  end
  return 1
end
if #redis.call('XRANGE', stream, id, id) > 0 then
  return 1
end
return 2
