-- create-group.lua: create the consumer group of a queue (at id 0, so messages published
-- before any worker existed are delivered too) and register this consumer in it.
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] unique set ${prefix}:unique:{Q}
-- ARGV[1] group, ARGV[2] this consumer
-- Returns 1 created, 0 the group existed already.
-- With Redis full (maxmemory, noeviction) the group is still created: the first write is an
-- SREM of the empty member, which no task id uses, and Redis checks only a script's first
-- write against the limit. Without this, a queue filled before any worker started could never
-- be read while Redis stays full. Called with pcall: a key of another type there (an
-- operator's SET, say; it holds no markers) must not stop a worker from reading the queue, and
-- Redis counts a write as the script's first whether or not the command then fails.
redis.pcall('SREM', KEYS[2], '') -- exempts the writes below from the memory limit
local created = 1
local reply = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(reply) == 'table' and reply.err then
  if not string.find(reply.err, 'BUSYGROUP', 1, true) then
    return redis.error_reply(reply.err)
  end
  created = 0
end
-- Registered at once (not at its first read), so admin counts see a consumer that started.
redis.call('XGROUP', 'CREATECONSUMER', KEYS[1], ARGV[1], ARGV[2])
return created
