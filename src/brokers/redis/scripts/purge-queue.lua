-- purge-queue.lua: delete one batch of waiting messages (ready and delayed) of a queue.
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] delayed zset, KEYS[3] delayed bodies,
-- KEYS[4] unique set
-- ARGV[1] group, ARGV[2] batch size
-- Returns the number deleted in this batch (call again until 0).
-- Waiting stream entries are those after the group's last-delivered id; entries up to it are
-- pending (in flight) and are left alone. Atomic so no consumer reads an entry between the
-- lookup of the last-delivered id and the delete.
-- Only a set holds unique markers: a key of another type there (an operator's SET, say) is left
-- alone, and the purge still deletes the messages.
local batch = tonumber(ARGV[2])
local hasUnique = redis.call('TYPE', KEYS[4])['ok'] == 'set'
local last = '0-0'
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) == 'table' and not groups.err then
  for _, g in ipairs(groups) do
    local name, lastId
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then lastId = g[i + 1] end
    end
    if name == ARGV[1] and lastId then last = lastId end
  end
end
local deleted = 0
local entries = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', batch)
for _, e in ipairs(entries) do
  redis.call('XDEL', KEYS[1], e[1])
  local fields = e[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'id' and hasUnique then redis.call('SREM', KEYS[4], fields[i + 1]) end
  end
  deleted = deleted + 1
end
local ids = redis.call('ZRANGE', KEYS[2], 0, batch - 1)
if #ids > 0 then
  redis.call('ZREM', KEYS[2], unpack(ids))
  redis.call('HDEL', KEYS[3], unpack(ids))
  if hasUnique then
    local taskIds = {}
    for i, member in ipairs(ids) do
      taskIds[i] = string.match(member, '^(.-)\255') or member -- (see delayed-member.lua)
    end
    redis.call('SREM', KEYS[4], unpack(taskIds))
  end
  deleted = deleted + #ids
end
return deleted
