-- publish-batch.lua: enqueue the plain messages (no delay, `unique` or backlog limit) that one
-- process published to one queue in one event-loop turn: one call instead of one XADD each.
-- KEYS[1] stream ${prefix}:stream:{Q}
-- ARGV[i] body of the i-th message, in publish order
-- Returns the number of messages added (all of them), or, when an XADD after the first failed,
-- {number added, error text}: the first ones are in the stream, the rest were not tried. When
-- the first fails, nothing was added: its error is the script's (so a client that reconnects
-- and sends again on READONLY, after a failover, does so for the whole batch).
-- Not atomic as a whole, and need not be: each entry is a message of its own, and the caller
-- learns exactly which were added, so none is reported lost that was added or the reverse.
for i = 1, #ARGV do
  local added = redis.pcall('XADD', KEYS[1], '*', 'data', ARGV[i])
  if type(added) == 'table' and added.err then
    if i == 1 then
      return redis.error_reply(added.err)
    end
    return { i - 1, added.err }
  end
end
return #ARGV
