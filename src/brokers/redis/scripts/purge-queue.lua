-- purge-queue.lua: delete one batch of waiting messages (ready, given back and delayed) of a queue.
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] delayed zset, KEYS[3] delayed bodies,
-- KEYS[4] unique set, KEYS[5] this call's receipt ${prefix}:sent:{Q}:<token>
-- ARGV[1] group, ARGV[2] batch size, ARGV[3] the consumer that holds given-back entries
-- (RELEASED_CONSUMER in redis-keys.ts), ARGV[4] receipt TTL ms
-- Returns the number deleted in this batch (call again until 0).
-- Waiting stream entries are those after the group's last-delivered id, and the pending ones
-- owned by ARGV[3] (given back by a consumer that stopped: release.lua; queue-stats.lua counts
-- them as waiting); the other pending entries are in flight and are left alone. Atomic so no
-- consumer reads or claims an entry between the lookup and the delete.
-- A copy of the call sent again (the client dropped a connection whose reply it lacked; the
-- first copy ran) finds the receipt and answers as the first did: without it, it would answer
-- 0 for a batch deleted, and the purge would stop, reporting too few.
-- Only a set holds unique markers: a key of another type there (an operator's SET, say) is left
-- alone, and the purge still deletes the messages.
local prior = redis.call('GET', KEYS[5])
if prior then
  return tonumber(prior)
end
local batch = tonumber(ARGV[2])
local hasUnique = redis.call('TYPE', KEYS[4])['ok'] == 'set'
local function dropMarker(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'id' and hasUnique then redis.call('SREM', KEYS[4], fields[i + 1]) end
  end
end
local deleted = 0
local given = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', batch, ARGV[3])
if type(given) == 'table' and not given.err then
  for _, p in ipairs(given) do
    local entry = redis.call('XRANGE', KEYS[1], p[1], p[1])[1]
    redis.call('XACK', KEYS[1], ARGV[1], p[1])
    if entry then
      redis.call('XDEL', KEYS[1], p[1])
      dropMarker(entry[2])
      deleted = deleted + 1
    end
  end
end
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
local entries = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', batch)
for _, e in ipairs(entries) do
  redis.call('XDEL', KEYS[1], e[1])
  dropMarker(e[2])
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
redis.pcall('SET', KEYS[5], deleted, 'PX', ARGV[4]) -- best effort (a full Redis refuses it)
return deleted
