-- publish-delayed.lua: enqueue the delayed messages that one process published to one queue in
-- one event-loop turn: one call, and one Redis clock reading, instead of one call each (a burst
-- scheduled for one moment gets one due time, not one spread over the time Redis took to run
-- a call per message).
-- KEYS[1] stream         ${prefix}:stream:{Q}
-- KEYS[2] delayed zset   ${prefix}:delayed:{Q}       (member = task id, see delayed-member.lua; score = due ms)
-- KEYS[3] delayed bodies ${prefix}:delayed-data:{Q}  (hash member -> body)
-- KEYS[4] unique set     ${prefix}:unique:{Q}        (task ids queued, delayed or in flight)
-- KEYS[5] this call's receipt ${prefix}:sent:{Q}:<token>
-- ARGV[1] max backlog (stream + delayed; 0 = no limit), ARGV[2] receipt TTL in ms, then four
-- per message, in publish order: task id, body, delay ms (> 0), "1" = unique.
-- Returns one number per message: 1 published, 0 not published (unique id already present),
-- -1 backlog over limit; each as publish.lua would have answered it, called in that order.
-- Idempotent per call, as publish-batch.lua: the receipt (the answers, kept ARGV[2] ms) makes a
-- copy of this call that the client sends again after it dropped a connection whose reply it
-- lacked answer as the first did, adding nothing (without it, a job the first copy scheduled
-- and the mover already moved would be scheduled again). Read before the first write.
-- Atomic: the backlog check, the unique marker and the enqueue must not interleave with
-- another publish, and the due time comes from the Redis clock (TIME), never a client's.
-- With Redis full (maxmemory, noeviction) the first write fails and nothing is written.
local prior = redis.call('GET', KEYS[5])
if prior then
  local answers = {}
  for code in string.gmatch(prior, '[^,]+') do
    answers[#answers + 1] = tonumber(code)
  end
  return answers
end
local maxLen = tonumber(ARGV[1])
local t = redis.call('TIME')
-- rounded up: the due time is never earlier than now + delay (the mover rounds down)
local nowMs = tonumber(t[1]) * 1000 + math.ceil(tonumber(t[2]) / 1000)
local out = {}
for i = 3, #ARGV, 4 do
  local id = ARGV[i]
  local result = 1
  if maxLen > 0 and redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= maxLen then
    result = -1
  elseif ARGV[i + 3] == '1' and redis.call('SISMEMBER', KEYS[4], id) == 1 then
    result = 0
  else
    addDelayed(KEYS[2], KEYS[3], id, nowMs + tonumber(ARGV[i + 2]), ARGV[i + 1])
    -- the marker after the message: a failed write leaves none that would refuse the id for good
    if ARGV[i + 3] == '1' then
      redis.call('SADD', KEYS[4], id)
    end
  end
  out[#out + 1] = result
end
redis.pcall('SET', KEYS[5], table.concat(out, ','), 'PX', ARGV[2]) -- best effort: the jobs are in
return out
