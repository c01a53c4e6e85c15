-- delete-record-if.lua: delete a task record only while it is still the one a caller read.
-- KEYS[1] record key ${prefix}:result:ID
-- ARGV[1] the state read, ARGV[2] the updatedAt read (ISO string)
-- Returns 1 deleted, 0 kept (no record, another state or time, or not a readable record).
-- Atomic: a record a newer run wrote between the caller's read and this call is kept.
local text = redis.call('GET', KEYS[1])
if not text then
  return 0
end
local ok, record = pcall(cjson.decode, text)
if not ok or type(record) ~= 'table' then
  return 0
end
if record.state ~= ARGV[1] or record.updatedAt ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
