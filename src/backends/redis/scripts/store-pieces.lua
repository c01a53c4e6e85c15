-- store-pieces.lua: write a terminal record whose JSON was written in pieces to a staging key
-- (SET, then APPENDs: each piece within any server's argument limits) and announce it.
-- KEYS[1] staging key ${prefix}:pieces:ID:RANDOM, KEYS[2] record key ${prefix}:result:ID
-- ARGV[1] TTL seconds (an integer; "0": no expiry), ARGV[2] done channel, ARGV[3] length of the
-- key prefix before the id ("${prefix}:result:"), ARGV[4] the record's length in bytes,
-- ARGV[5] "1": only when KEYS[2] holds no terminal record (holdsFinal, holds-final.lua,
-- composed above at load time)
-- Returns 1 written, 0 left (ARGV[5] "1" and a terminal record there: the staging key is
-- deleted); an error when the staging key is missing or not of the record's length (it was
-- evicted or expired and an APPEND made it again, a piece was lost, or one was sent twice):
-- nothing is written then, and the staging key is deleted (the writer writes anew).
-- The record replaces the key's value as store-results.lua's SET does (terminal records need no
-- precedence check); the notification names the task id only (the record is too long to inline).
if redis.call('STRLEN', KEYS[1]) ~= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
  return redis.error_reply('ERR the record written in pieces is incomplete at ' .. KEYS[1])
end
if ARGV[5] == '1' and holdsFinal(KEYS[2]) then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('RENAME', KEYS[1], KEYS[2])
if ARGV[1] == '0' then
  redis.call('PERSIST', KEYS[2])
else
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
-- best effort, as in store-results.lua
redis.pcall('PUBLISH', ARGV[2], '[' .. cjson.encode(string.sub(KEYS[2], tonumber(ARGV[3]) + 1)) .. ']')
return 1
