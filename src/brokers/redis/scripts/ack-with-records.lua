-- ack-with-records.lua: write the result backend's terminal records of a batch of deliveries,
-- then ack the deliveries: one call where store-results.lua and ack.lua would be two. Used when
-- the broker and the result backend share one Redis server and database (not a Cluster).
-- Composed at load time: the text of store-results.lua (backend), pending-of.lua,
-- owner-of.lua and ack.lua (broker) become the functions storeResults(KEYS, ARGV),
-- pendingOf(...), ownerOf(...) and ack(KEYS, ARGV, mine) above this body.
-- KEYS[1..n] record keys (store-results.lua's KEYS), KEYS[n + 1] stream, KEYS[n + 2] unique set
-- ARGV[1] n, ARGV[2..5 + n] store-results.lua's ARGV, ARGV[6 + n..] ack.lua's ARGV, whose
-- first n entry ids are those of the records' deliveries, in the order of the records
-- Returns ack.lua's result (one number per entry id): a record is written exactly when its
-- entry's result is 1 or 3.
-- Atomic, and the records are written before the acks: a script that fails while writing
-- acks nothing, so the deliveries are redelivered instead of losing their results.
-- Redis full (maxmemory, noeviction): Redis checks only a script's first write against the
-- limit, and the first write here is an XACK of id 0-0, which never exists and never fails: the
-- records and acks still go through, so workers keep draining a full Redis (acks free memory).
-- Fenced like the ack: only the records of entries pending for this consumer are written, and
-- of those ack.lua deletes as pending for nobody while still in the stream (the group lost
-- them: nobody else holds them, and once deleted nobody will run them again, so this run's
-- outcome is the job's). A consumer that lost its lease (another consumer took the entry, and
-- may have stored its own result) writes nothing; nor does a call sent again after it was
-- applied (the entries are gone, their records already written). An id prefixed with `!`
-- (untrusted, see ack.lua) is looked up without it.
local n = tonumber(ARGV[1])
local ackFrom = 6 + n
local group, consumer, low, high = ARGV[ackFrom], ARGV[ackFrom + 1], ARGV[ackFrom + 2], ARGV[ackFrom + 3]
-- This consumer's pending entries in the batch's id range, listed once for the records and
-- the acks (nothing in between changes them: the call is atomic).
local mine = pendingOf(KEYS[n + 1], group, consumer, low, high)
redis.call('XACK', KEYS[n + 1], group, '0-0') -- exempts the writes below from the memory limit
-- True when entry `id`, not pending for this consumer, is pending for nobody and still in the
-- stream: ack.lua deletes it (its result 3).
local function orphaned(id)
  return not ownerOf(KEYS[n + 1], group, id) and #redis.call('XRANGE', KEYS[n + 1], id, id) > 0
end
local storeKeys, storeArgv = {}, { ARGV[2], ARGV[3], ARGV[4], ARGV[5] }
for i = 1, n do
  local id = ARGV[ackFrom + 3 + i]
  if string.byte(id, 1) == 33 then -- '!'
    id = string.sub(id, 2)
  end
  if mine[id] or orphaned(id) then
    storeKeys[#storeKeys + 1] = KEYS[i]
    storeArgv[#storeArgv + 1] = ARGV[5 + i]
  end
end
if #storeKeys > 0 then
  storeResults(storeKeys, storeArgv)
end
local ackArgv = {}
for i = ackFrom, #ARGV do
  ackArgv[#ackArgv + 1] = ARGV[i]
end
return ack({ KEYS[n + 1], KEYS[n + 2] }, ackArgv, mine)
