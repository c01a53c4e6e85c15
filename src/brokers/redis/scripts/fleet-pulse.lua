-- fleet-pulse.lua: the body of fleetPulse(key, nowMs, stallMs, leaseMs, seenMs), composed at
-- load time into the scripts a live consumer calls at least every stallMs (reclaim.lua every
-- reclaim interval while it has a free slot, renew.lua every lease/3 while it holds entries).
-- key ${prefix}:pulse:{Q}, a hash: `at` the Redis time (ms) of the last such call on this
-- stream, `extra` and `until` the out-of-touch window open on it (extra idle ms that reclaims
-- require, until that Redis time), `sure` how much of `extra` is proven: no call on this stream
-- in the `sure` ms before the window opened (the hash was there to tell; see below). seenMs: a
-- stall the caller saw itself (0: none).
-- Returns { extra idle ms in force (0: no window), 1 when this call opened or widened it, the
-- proven part of the extra in force }.
-- Why: a lease is an entry's idle time in Redis, which keeps counting while Redis is frozen or
-- restarting. A consumer that saw the stall itself waits (redis-contact.ts), but one that
-- started during it, or one in touch with other Cluster nodes only, did not. Here the stream's
-- own server tells: no consumer called for longer than stallMs, so either every consumer is
-- dead or none could reach this server (a stall). Both are answered the same way: for one lease
-- from now, every consumer reclaims only entries idle longer than the lease plus the quiet
-- time (entries given back by their owner excepted: reclaim.lua takes those at the lease,
-- there is no owner to wait for). A live owner renews within that lease; a dead owner's
-- entries are taken when it ends (at most one lease later than without the window). A stall the caller saw opens the window
-- too, unless another consumer called during it (then the stall was the caller's own: its
-- process or its network, not Redis); so does one that came before any call was recorded.
-- stallMs <= 0 turns the quiet check off. A window opened while the hash was missing (never
-- written, deleted, or lost with a restart) rests on the caller's own stall alone: nothing
-- shows that nobody called meanwhile, so it is not proven (`sure` 0). Every reclaim is such a
-- call and the hash records the last one, so a proven window tells a settle resent after a stall
-- that no reclaim took an entry confirmed less than the lease plus `sure` ago (redis-settler.ts).
-- The hash has no TTL (a volatile-* eviction policy must not pick it; PERSIST clears the day-long
-- TTL that earlier versions set). Its writes must not be a script's first (a full Redis refuses
-- HSET as one): the callers write something else first.
-- A key of another type there (an operator's SET) is taken for a missing hash and left as it
-- is: the renewals and reclaims that call this go on (failing, they would leave live workers'
-- leases unrenewed and dead workers' entries unclaimed), with only the caller's own stall to
-- open a window; Redis's log says why.
local v = redis.pcall('HMGET', key, 'at', 'extra', 'until', 'sure')
local usable = not (type(v) == 'table' and v.err)
if not usable then
  redis.log(redis.LOG_WARNING, 'chicory: ' .. key .. ' is not a hash (' .. tostring(v.err) .. '): the stall check of its queue rests on each worker alone until the key is deleted')
  v = {}
end
local at, extra, untilMs, sure = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0
if untilMs <= nowMs then
  extra = 0
  sure = 0
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
  if at ~= nil then
    sure = seen
  else
    sure = 0
  end
end
if usable then
  redis.call('HSET', key, 'at', nowMs, 'extra', extra, 'until', untilMs, 'sure', sure)
  redis.call('PERSIST', key)
end
return { extra, opened, sure }
