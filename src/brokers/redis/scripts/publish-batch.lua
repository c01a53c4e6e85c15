-- publish-batch.lua: enqueue the plain messages (no delay, `unique` or backlog limit) that one
-- process published to one queue in one event-loop turn: one call instead of one XADD each.
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] this call's receipt ${prefix}:sent:{Q}:<token>
-- ARGV[1] receipt TTL in ms, ARGV[2..] body of each message, in publish order
-- Returns the number of messages added (all of them), or, when an XADD after the first failed,
-- {number added, error text}: the first ones are in the stream, the rest were not tried. When
-- the first fails, nothing was added: its error is the script's (so a client that reconnects
-- and sends again on READONLY, after a failover, does so for the whole batch).
-- Not atomic as a whole, and need not be: each entry is a message of its own, and the caller
-- learns exactly which were added, so none is reported lost that was added or the reverse.
-- Idempotent per call: the receipt (the reply, kept ARGV[1] ms) makes a copy of this call
-- that the client sends again after it dropped a connection whose reply it lacked (a Redis
-- stalled past the reply limit ran the first copy all the same) answer as the first did,
-- adding nothing. Read before the first write, so a full Redis still refuses with OOM.
local prior = redis.call('GET', KEYS[2])
if prior then
  local count, err = string.match(prior, '^(%d+)\n(.*)$')
  if count then
    return { tonumber(count), err }
  end
  return tonumber(prior)
end
for i = 2, #ARGV do
  local added = redis.pcall('XADD', KEYS[1], '*', 'data', ARGV[i])
  if type(added) == 'table' and added.err then
    if i == 2 then
      return redis.error_reply(added.err)
    end
    redis.pcall('SET', KEYS[2], (i - 2) .. '\n' .. added.err, 'PX', ARGV[1])
    return { i - 2, added.err }
  end
end
redis.pcall('SET', KEYS[2], #ARGV - 1, 'PX', ARGV[1]) -- best effort: the messages are in
return #ARGV - 1
