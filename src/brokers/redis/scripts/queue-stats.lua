-- queue-stats.lua: sizes of one queue, read consistently.
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] delayed zset ${prefix}:delayed:{Q}
-- ARGV[1] group, ARGV[2] the consumer that holds given-back entries (RELEASED_CONSUMER in
-- redis-keys.ts)
-- Returns { stream length, pending count, delayed count }. Acknowledged entries are deleted,
-- so waiting = stream length - pending + delayed. Entries given back (owned by ARGV[2] until a
-- consumer claims them) wait for a consumer: not counted as pending. Atomic so the three
-- numbers agree. Composed at load time below heldCount (held-count.lua).
local len = redis.call('XLEN', KEYS[1])
local pending = 0
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if type(p) == 'table' and not p.err then
  pending = heldCount(p, ARGV[2])
end
return { len, pending, redis.call('ZCARD', KEYS[2]) }
