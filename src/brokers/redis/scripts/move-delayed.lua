-- move-delayed.lua: move due delayed messages to the stream, one bounded batch.
-- KEYS[1] delayed zset ${prefix}:delayed:{Q}, KEYS[2] delayed bodies ${prefix}:delayed-data:{Q},
-- KEYS[3] stream ${prefix}:stream:{Q}, KEYS[4] unique set ${prefix}:unique:{Q}
-- ARGV[1] batch size (e.g. 500), ARGV[2] (optional) byte budget: the call stops after the entry
-- that brings the bodies it moved to this many bytes (at least one entry moves), so a batch of
-- large bodies does not block Redis for long
-- Returns { due entries taken, next due ms of the earliest remaining entry as a string or "-1",
-- Redis now ms, entries dropped because their body was missing }.
-- A member that starts with '{' (after any whitespace) is taken as a whole message (another producer may ZADD the
-- message JSON, scored in epoch ms): it is moved as the entry's data, as it is.
-- A due id without a body (a partial restore, a hand edit, an evicted hash) cannot be moved:
-- it leaves the set, its unique marker goes too (else that task id would be refused
-- forever), and the caller reports the count.
-- Atomic: an entry is removed from the delayed set in the same step it is added to the
-- stream, so concurrent movers never move it twice; "due" is judged by Redis TIME, so a
-- consumer with a fast clock cannot move anything early. The LIMIT keeps each call short.
-- With Redis full (maxmemory, noeviction) due jobs still move (the stream grows by what the
-- delayed set loses): the first write is an HDEL of the empty field, which no task id uses,
-- and Redis checks only a script's first write against the limit.
-- A member is a task id, or (a second message of one task id, see delayed-member.lua) the id,
-- byte 255 and a number: the entry's `id` field gets the part before byte 255.
local function taskIdOf(member)
  return string.match(member, '^(.-)\255') or member
end
local t = redis.call('TIME')
local nowMs = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nowMs, 'LIMIT', 0, tonumber(ARGV[1]))
if #ids > 0 then
  redis.call('HDEL', KEYS[2], '') -- exempts the writes below from the memory limit
end
local lost = 0
local budget = tonumber(ARGV[2] or '0') or 0
local bytes = 0
local taken = #ids
for i, id in ipairs(ids) do
  if budget > 0 and bytes >= budget then
    taken = i - 1
    break
  end
  local body = redis.call('HGET', KEYS[2], id)
  if body then
    bytes = bytes + #body
    redis.call('XADD', KEYS[3], '*', 'data', body, 'id', taskIdOf(id))
    redis.call('HDEL', KEYS[2], id)
  elseif string.find(id, '^%s*{') then
    -- '{': a member that is a message itself (another producer's ZADD of the JSON, as the
    -- delayed set's plain layout has it); the worker checks it as any entry (a bad one is
    -- dead-lettered, not dropped here)
    bytes = bytes + #id
    redis.call('XADD', KEYS[3], '*', 'data', id)
  else
    if redis.call('TYPE', KEYS[4])['ok'] == 'set' then -- (another type: no marker to drop)
      redis.call('SREM', KEYS[4], taskIdOf(id))
    end
    lost = lost + 1
  end
end
if taken > 0 then
  redis.call('ZREM', KEYS[1], unpack(ids, 1, taken))
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return { taken, first[2] or '-1', nowMs, lost }
