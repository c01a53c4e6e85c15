-- drop-unique-marker.lua: the body of the local function dropUniqueMarker(stream, unique, id),
-- composed at load time above the scripts that settle an entry for good (ack.lua,
-- dead-letter.lua): drops from the unique set `unique` the task id that entry `id` of `stream`
-- names in its `id` field. Entries of unique messages carry that field (publish.lua, retry.lua,
-- replay.lua, move-delayed.lua); plain entries have only `data` and hold no marker, so settling
-- one leaves alone the marker a unique copy of the same task id may hold. The caller checks that
-- `unique` is a set, that the entry is trusted, and calls this before the entry's XDEL.
local entry = redis.call('XRANGE', stream, id, id)
local fields = entry[1] and entry[1][2] or {}
for f = 1, #fields, 2 do
  if fields[f] == 'id' then
    redis.call('SREM', unique, fields[f + 1])
  end
end
