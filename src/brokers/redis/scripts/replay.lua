-- replay.lua: move one DLQ entry back to a work stream.
-- KEYS[1] DLQ stream ${prefix}:dlq:{Q}, KEYS[2] target stream ${prefix}:stream:{T}
-- ARGV[1] DLQ entry id, ARGV[2] body to enqueue (rewritten by the caller), ARGV[3] task id
-- Returns 1 replayed, 0 the entry does not exist (already replayed or deleted).
-- Atomic check-and-delete: two concurrent replays of one entry enqueue it once (only the call
-- whose XDEL removed the entry enqueues it).
-- (T = Q by default: one slot. Replaying into another queue touches two slots, which works
-- on a standalone Redis but not on Redis Cluster.)
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', 'data', ARGV[2], 'id', ARGV[3])
return 1
