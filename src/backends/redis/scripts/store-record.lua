-- store-record.lua: write a non-terminal task record (STARTED, RETRY) with state precedence.
-- (Terminal records need no check: store-results.lua writes and announces them in batches.)
-- KEYS[1] record key ${prefix}:result:ID (a JSON string that always starts with {"state":"...")
-- ARGV[1] record JSON, ARGV[2] TTL seconds ("0": no expiry)
-- Returns 1 written, 0 refused (a terminal record is never replaced by a non-terminal one).
-- Atomic: the precedence check and the write cannot interleave with another write of the
-- same task (a late STARTED/RETRY never overwrites SUCCESS/FAILURE/DEAD_LETTERED).
-- Composed at load time below holdsFinal(key) (holds-final.lua).
if holdsFinal(KEYS[1]) then
  return 0
end
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 1
