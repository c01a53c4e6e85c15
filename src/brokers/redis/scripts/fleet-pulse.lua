-- fleet-pulse.lua: the body of fleetPulse(key, nowMs, stallMs, leaseMs, seenMs), composed at
-- load time into the scripts a live consumer calls at least every stallMs (reclaim.lua every
-- reclaim interval while it has a free slot, renew.lua every lease/3 while it holds entries).
-- key ${prefix}:pulse:{Q}, a hash: `at` the Redis time (ms) of the last such call on this
-- stream, `extra` and `until` the out-of-touch window open on it (extra idle ms that reclaims
-- require, until that Redis time). seenMs: a stall the caller saw itself (0: none).
-- Returns { extra idle ms in force (0: no window), 1 when this call opened or widened it }.
-- Why: a lease is an entry's idle time in Redis, which keeps counting while Redis is frozen or
-- restarting. A consumer that saw the stall itself waits (redis-contact.ts), but one that
-- started during it, or one in touch with other Cluster nodes only, did not. Here the stream's
-- own server tells: no consumer called for longer than stallMs, so either every consumer is
-- dead or none could reach this server (a stall). Both are answered the same way: for one lease
-- from now, every consumer reclaims only entries idle longer than the lease plus the quiet
-- time. A live owner renews within that lease; a dead owner's entries are taken when it ends
-- (at most one lease later than without the window). A stall the caller saw opens the window
-- too, unless another consumer called during it (then the stall was the caller's own: its
-- process or its network, not Redis); so does one that came before any call was recorded.
-- stallMs <= 0 turns the quiet check off. The hash expires a day after the last call (a queue
-- no worker served for a day has no window to keep). Its writes must not be a script's first
-- (a full Redis refuses HSET as one): the callers write something else first.
local v = redis.call('HMGET', key, 'at', 'extra', 'until')
local at, extra, untilMs = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
if untilMs <= nowMs then
  extra = 0
end
local seen = 0
if at == nil or at <= nowMs - seenMs then
  seen = seenMs
end
if stallMs > 0 and at ~= nil and nowMs - at > stallMs then
  seen = math.max(seen, nowMs - at)
end
local opened = 0
if seen > extra then
  extra = seen
  untilMs = nowMs + leaseMs
  opened = 1
end
redis.call('HSET', key, 'at', nowMs, 'extra', extra, 'until', untilMs)
redis.call('PEXPIRE', key, 86400000)
return { extra, opened }
