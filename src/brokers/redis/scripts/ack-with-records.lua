-- ack-with-records.lua: write the result backend's terminal records of a batch of deliveries,
-- then ack the deliveries: one call where store-results.lua and ack.lua would be two. Used when
-- the broker and the result backend share one Redis server and database (not a Cluster).
-- Composed at load time: the text of store-results.lua (backend) and of ack.lua (broker) become
-- the functions storeResults(KEYS, ARGV) and ack(KEYS, ARGV) above this body.
-- KEYS[1..n] record keys (store-results.lua's KEYS), KEYS[n + 1] stream, KEYS[n + 2] unique set
-- ARGV[1] n, ARGV[2..5 + n] store-results.lua's ARGV, ARGV[6 + n..] ack.lua's ARGV
-- Returns ack.lua's result (one number per entry id).
-- Atomic, and the records are written before the acks: a script that fails while writing
-- (e.g. OOM) acks nothing, so the deliveries are redelivered instead of losing their results.
-- A fenced ack (entry owned by another consumer) still writes its record, as a separate
-- store-results.lua call would have.
local n = tonumber(ARGV[1])
local storeKeys, storeArgv, ackArgv = {}, {}, {}
for i = 1, n do
  storeKeys[i] = KEYS[i]
end
for i = 1, 4 + n do
  storeArgv[i] = ARGV[1 + i]
end
for i = 6 + n, #ARGV do
  ackArgv[#ackArgv + 1] = ARGV[i]
end
storeResults(storeKeys, storeArgv)
return ack({ KEYS[n + 1], KEYS[n + 2] }, ackArgv)
