-- queue-stats.lua: sizes of one queue, read consistently.
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] delayed zset ${prefix}:delayed:{Q}
-- ARGV[1] group
-- Returns { stream length, pending count, delayed count }. Acknowledged entries are deleted,
-- so waiting = stream length - pending + delayed. Atomic so the three numbers agree.
local len = redis.call('XLEN', KEYS[1])
local pending = 0
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if type(p) == 'table' and not p.err then
  pending = tonumber(p[1]) or 0
end
return { len, pending, redis.call('ZCARD', KEYS[2]) }
