-- holder-of.lua: the body of holderOf(stream, group, consumer, id), composed at load time below
-- ownerOf (owner-of.lua) into renew.lua and lease-state.lua: who holds entry `id` now.
--   0: pending for `consumer`;
--   1: pending for another consumer, or pending for nobody but still in the stream (its group
--      was deleted and re-created, and delivers it again): someone else runs it;
--   2: pending for nobody and gone from the stream: settled by a consumer that reclaimed it,
--      or lost in a restart without persistence. Nobody will run it again.
local owner = ownerOf(stream, group, id)
if owner then
  if owner == consumer then
    return 0
  end
  return 1
end
if #redis.call('XRANGE', stream, id, id) > 0 then
  return 1
end
return 2
