-- purge-dlq.lua: delete a DLQ stream and say how many entries it had.
-- KEYS[1] DLQ stream ${prefix}:dlq:{Q}, KEYS[2] this call's receipt ${prefix}:sent:{Q}:<token>
-- ARGV[1] receipt TTL ms
-- Returns the number of entries deleted. Atomic so the count matches what was deleted; UNLINK
-- frees a large DLQ's memory in the background instead of blocking Redis for it.
-- A copy of the call sent again (the client dropped a connection whose reply it lacked; the
-- first copy ran) finds the receipt and answers as the first did, without deleting the dead
-- letters written since.
local prior = redis.call('GET', KEYS[2])
if prior then
  return tonumber(prior)
end
local n = redis.call('XLEN', KEYS[1])
redis.call('UNLINK', KEYS[1])
redis.call('SET', KEYS[2], n, 'PX', ARGV[1])
return n
