-- ack.lua: messages are done; remove them for good. Acks of one consumer and one queue issued in
-- the same event-loop turn travel together (one call for the whole batch).
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] unique set ${prefix}:unique:{Q}
-- ARGV[1] group, ARGV[2] consumer settling them, ARGV[3] lowest and ARGV[4] highest entry id of
-- the batch (computed by the caller), ARGV[5..] entry ids; an id prefixed with `!` is that of an
-- untrusted entry (with signing on, its message failed to decode or verify): acknowledged like
-- the others, but the task id its `id` field claims keeps its unique marker, which a genuine
-- message may hold
-- Returns one number per entry id: 1 when the entry was pending and is now acknowledged; 2 when
-- it is pending for nobody and no longer in the stream (settled already: by an earlier copy of
-- this call, or by another consumer); 3 when it was still in the stream, pending for nobody (the
-- group lost it: deleted and recreated, or a Redis restored from a backup or failed over), and
-- is deleted now, as an ack would have (else a group read from 0 runs it again); else 0 (owned
-- by another consumer after a lost lease: fenced, nothing changes).
-- Atomic: XACK and XDEL together (Redis 7.0 has no XACKDEL), so an acknowledged entry never
-- stays in the stream (no history growth, no replay if the group is recreated at 0); the
-- unique marker is dropped only by the settle that actually removed the entry (entries of unique
-- messages carry an `id` field with the task id; plain entries have only `data`).
-- Cost: one XPENDING lists this consumer's entries in the batch's id range, then one XACK and one
-- XDEL for all of them; only entries not pending for this consumer are looked at one by one.
-- Composed at load time as the function ack(KEYS, ARGV, mine), below pendingOf (pending-of.lua),
-- ownerOf (owner-of.lua) and dropUniqueMarker (drop-unique-marker.lua): `mine`, when given, is that list already made
-- in the same call (ack-with-records.lua).
if #ARGV < 5 then
  return {}
end
mine = mine or pendingOf(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
-- Only a set holds markers: a key of another type there (an operator's SET, say) must not fail
-- the ack, or the message would stay pending and run again after every lease.
local hasUnique = redis.call('TYPE', KEYS[2])['ok'] == 'set'
-- Drops the unique marker of entry `id` (its `id` field), when the queue has unique messages.
local function dropMarkerOf(id)
  if hasUnique then
    dropUniqueMarker(KEYS[1], KEYS[2], id)
  end
end
local results = {}
local owned = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local trusted = string.byte(id, 1) ~= 33 -- '!'
  if not trusted then
    id = string.sub(id, 2)
  end
  local result = 0
  if mine[id] then
    owned[#owned + 1] = id
    if trusted then
      dropMarkerOf(id)
    end
    result = 1
  else
    -- Not pending for this consumer: already settled (then only make sure the entry is gone),
    -- or now owned by another consumer (fenced: nothing changes).
    if not ownerOf(KEYS[1], ARGV[1], id) then
      -- Still in the stream but pending for nobody (a restored or failed-over Redis): the entry
      -- goes, and so does its unique marker, which would refuse that task id forever.
      if trusted then
        dropMarkerOf(id)
      end
      if redis.call('XDEL', KEYS[1], id) == 0 then
        result = 2
      else
        result = 3
      end
    end
  end
  results[#results + 1] = result
end
if #owned > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(owned))
  redis.call('XDEL', KEYS[1], unpack(owned))
end
return results
