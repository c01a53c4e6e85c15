-- replay.lua: move one DLQ entry back to its work stream.
-- KEYS[1] DLQ stream ${prefix}:dlq:{Q}, KEYS[2] work stream ${prefix}:stream:{Q},
-- KEYS[3] unique set ${prefix}:unique:{Q}, KEYS[4] this call's receipt ${prefix}:sent:{Q}:<token>
-- ARGV[1] DLQ entry id, ARGV[2] body to enqueue (rewritten by the caller), ARGV[3] task id,
-- ARGV[4] receipt TTL ms
-- Returns 1 replayed, 0 the entry does not exist (already replayed or deleted), -2 refused: a
-- message with this task id is queued, delayed or in flight under a unique marker (nothing
-- changed; the entry stays in the DLQ).
-- Atomic check-and-delete: two concurrent replays of one entry enqueue it once (only the call
-- whose XDEL removed the entry enqueues it).
-- The replayed entry holds the unique marker of its task id (and carries the `id` field, so
-- its settle drops it): a unique publish of that id while it is queued is refused, and its
-- settle never drops the marker of another copy. Replaying while another copy holds the
-- marker would make two copies of one unique id: refused instead.
-- A copy of the call sent again (the client dropped a connection whose reply it lacked; the
-- first copy ran) finds the receipt and answers 1 as the first did (without it, the entry gone
-- and the marker taken by the first copy, it answered 0: "nothing replayed").
-- A work stream or unique set of another type (an operator's SET at the key, say) fails the call
-- before any write (assertType): failing after the XDEL would lose the entry.
if redis.call('EXISTS', KEYS[4]) == 1 then
  return 1
end
assertType(KEYS[2], 'stream')
assertType(KEYS[3], 'set')
if redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 1 then
  if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
    return 0
  end
  return -2
end
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('XADD', KEYS[2], '*', 'data', ARGV[2], 'id', ARGV[3])
redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
return 1
