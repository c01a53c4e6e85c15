-- publish.lua: enqueue one message when it needs more than a plain XADD (delay, unique,
-- backlog limit).
-- KEYS[1] stream         ${prefix}:stream:{Q}
-- KEYS[2] delayed zset   ${prefix}:delayed:{Q}       (member = task id, see delayed-member.lua; score = due ms)
-- KEYS[3] delayed bodies ${prefix}:delayed-data:{Q}  (hash member -> body)
-- KEYS[4] unique set     ${prefix}:unique:{Q}        (task ids queued, delayed or in flight)
-- KEYS[5] this call's receipt ${prefix}:sent:{Q}:<token>
-- ARGV[1] body, ARGV[2] task id, ARGV[3] delay ms (0 = now), ARGV[4] "1" = unique,
-- ARGV[5] max backlog (stream + delayed; 0 = no limit), ARGV[6] receipt TTL in ms
-- Returns 1 published, 0 not published (unique id already present), -1 backlog over limit.
-- Idempotent per call, as publish-batch.lua: the receipt (the answer, kept ARGV[6] ms) makes a
-- copy of this call that the client sends again after it dropped a connection whose reply it
-- lacked answer as the first did (without it, a unique message's resent copy would find its
-- own id and answer 0 for a message that was published). Read before the first write.
-- Atomic: the backlog check, the unique marker and the enqueue must not interleave with
-- another publish, and the due time comes from the Redis clock (TIME), never a client's.
local prior = redis.call('GET', KEYS[5])
if prior then
  return tonumber(prior)
end
local function answer(result)
  redis.pcall('SET', KEYS[5], result, 'PX', ARGV[6]) -- best effort: the message is in (or not)
  return result
end
local maxLen = tonumber(ARGV[5])
if maxLen > 0 and redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= maxLen then
  return answer(-1)
end
-- The unique marker is added after the message: a write that fails (a key of another type, an
-- operator's SET there) leaves no marker that would refuse the task id for good.
local unique = ARGV[4] == '1'
if unique and redis.call('SISMEMBER', KEYS[4], ARGV[2]) == 1 then
  return answer(0)
end
local delayMs = tonumber(ARGV[3])
if delayMs > 0 then
  local t = redis.call('TIME')
  -- rounded up: the due time is never earlier than now + delay (the mover rounds down)
  local nowMs = tonumber(t[1]) * 1000 + math.ceil(tonumber(t[2]) / 1000)
  addDelayed(KEYS[2], KEYS[3], ARGV[2], nowMs + delayMs, ARGV[1])
else
  redis.call('XADD', KEYS[1], '*', 'data', ARGV[1], 'id', ARGV[2])
end
if unique then
  redis.call('SADD', KEYS[4], ARGV[2])
end
return answer(1)
