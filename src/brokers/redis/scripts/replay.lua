-- replay.lua: move one DLQ entry back to its work stream.
-- KEYS[1] DLQ stream ${prefix}:dlq:{Q}, KEYS[2] work stream ${prefix}:stream:{Q},
-- KEYS[3] unique set ${prefix}:unique:{Q}
-- ARGV[1] DLQ entry id, ARGV[2] body to enqueue (rewritten by the caller), ARGV[3] task id
-- Returns 1 replayed, 0 the entry does not exist (already replayed or deleted), -2 refused: a
-- message with this task id is queued, delayed or in flight under a unique marker (nothing
-- changed; the entry stays in the DLQ).
-- Atomic check-and-delete: two concurrent replays of one entry enqueue it once (only the call
-- whose XDEL removed the entry enqueues it).
-- The replayed entry holds the unique marker of its task id (and carries the `id` field, so
-- its settle drops it): a unique publish of that id while it is queued is refused, and its
-- settle never drops the marker of another copy. Replaying while another copy holds the
-- marker would make two copies of one unique id: refused instead.
-- A work stream or unique set of another type (an operator's SET at the key, say) fails the call
-- before any write (assertType): failing after the XDEL would lose the entry.
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
return 1
