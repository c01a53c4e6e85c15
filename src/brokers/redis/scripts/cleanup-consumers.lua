-- cleanup-consumers.lua: delete stale consumers of a group.
-- KEYS[1] stream ${prefix}:stream:{Q}
-- ARGV[1] group, ARGV[2] stale ms (-1: any idle time), ARGV[3] the consumer that holds
-- given-back entries (RELEASED_CONSUMER in redis-keys.ts: deleted whenever it holds nothing,
-- whatever its idle time, and not counted), ARGV[4] (optional) only this consumer (a consumer
-- closing deletes itself when it owns nothing)
-- Returns the number of consumers deleted (workers' consumers); fails when XINFO fails for
-- another reason than a missing stream or group.
-- Atomic (fixes C10): "owns no pending entry and idle longer than stale" is checked and the
-- consumer deleted in the same step, so a consumer that reads in between is never deleted
-- with entries it owns (DELCONSUMER would make them unclaimable).
-- A stream or group that does not exist has no consumers (0). Any other error (NOPERM: the
-- user may not run XINFO; WRONGTYPE) fails the call: taken for "nothing to delete", a cleanup
-- would report success and remove nothing.
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(consumers) == 'table' and consumers.err then
  if string.find(consumers.err, 'NOGROUP', 1, true) or string.find(consumers.err, 'no such key', 1, true) then
    return 0
  end
  return redis.error_reply(consumers.err)
end
if type(consumers) ~= 'table' then
  return 0
end
local staleMs = tonumber(ARGV[2])
local deleted = 0
for _, c in ipairs(consumers) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] end
    if c[i] == 'pending' then pending = tonumber(c[i + 1]) end
    if c[i] == 'idle' then idle = tonumber(c[i + 1]) end
  end
  if name == ARGV[3] then
    if pending == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    end
  elseif name and (ARGV[4] == nil or name == ARGV[4]) and pending == 0 and idle and idle > staleMs then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    deleted = deleted + 1
  end
end
return deleted
