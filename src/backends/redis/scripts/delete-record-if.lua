-- delete-record-if.lua: delete a task record only while it is still the one a caller read, and
-- announce the deletion so that no process hands out the record it kept.
-- KEYS[1] record key ${prefix}:result:ID
-- ARGV[1] the record's expected beginning ({"state":"<state>",), ARGV[2] its expected end
-- ("updatedAt":"<iso>"}), ARGV[3] done channel, ARGV[4] notification (a JSON array holding the
-- task id: "read the key again")
-- Returns 1 deleted, 0 kept (no record, another state or time, or not a record of this format).
-- Atomic: a record a newer run wrote between the caller's read and this call is kept. Records
-- are written with `state` first and `updatedAt` last (encodeRecord), so only both ends are
-- read (GETRANGE), however large the record.
local head = redis.call('GETRANGE', KEYS[1], 0, #ARGV[1] - 1)
if head ~= ARGV[1] then
  return 0
end
local tail = redis.call('GETRANGE', KEYS[1], -#ARGV[2], -1)
if tail ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
-- Best effort, as in store-results.lua: a user without the channel right still deletes.
redis.pcall('PUBLISH', ARGV[3], ARGV[4])
return 1
