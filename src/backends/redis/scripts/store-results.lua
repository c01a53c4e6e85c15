-- store-results.lua: write the terminal records finished in one event-loop turn of a process
-- and announce them with one PUBLISH (called with a variable number of keys).
-- KEYS[i] record key ${prefix}:result:ID of the i-th record
-- ARGV[1] TTL seconds (an integer, handed to SET as is; "0": no expiry), ARGV[2] done channel, ARGV[3] length
-- of the key prefix before the id ("${prefix}:result:"), ARGV[4] longest record inlined in the
-- notification,
-- ARGV[4 + i] record JSON of KEYS[i]
-- Returns the number of records written.
-- Terminal records need no precedence check (terminal states may replace each other). The
-- notification is a JSON array with, per record, the record itself when it is at most
-- ARGV[4] bytes long, else its task id as a JSON string (waiters then read the key). Every SET
-- runs before the PUBLISH, so a waiter that reads the key after the message sees the record.
local ttl = ARGV[1] -- a string: SET parses it (a Lua number would be formatted again per call)
local idFrom = tonumber(ARGV[3]) + 1
local inlineMax = tonumber(ARGV[4])
local notes = {}
for i = 1, #KEYS do
  local json = ARGV[4 + i]
  if ttl == '0' then
    redis.call('SET', KEYS[i], json)
  else
    redis.call('SET', KEYS[i], json, 'EX', ttl)
  end
  if #json <= inlineMax then
    notes[i] = json
  else
    notes[i] = cjson.encode(string.sub(KEYS[i], idFrom))
  end
end
-- Best effort (pcall): a Redis user without the right to this channel (Redis 7 gives a new
-- ACL user none) would fail the call after its SETs, half applied, and the acks composed after
-- it (ack-with-records.lua) would never happen. Unannounced records are found by the waiters'
-- polls; the backend warns at connect when it may not publish.
redis.pcall('PUBLISH', ARGV[2], '[' .. table.concat(notes, ',') .. ']')
return #KEYS
