-- held-count.lua: the body of heldCount(summary, released), composed at load time into
-- queue-stats.lua and reclaim.lua: how many entries consumers hold, from XPENDING's summary
-- form `summary` ({ count, first id, last id, { { consumer, count }, ... } }). Entries given
-- back (owned by the consumer `released`, RELEASED_CONSUMER in redis-keys.ts, until a consumer
-- claims them) wait for a consumer: not counted.
local held = tonumber(summary[1]) or 0
for _, owner in ipairs(summary[4] or {}) do
  if owner[1] == released then
    held = held - tonumber(owner[2])
  end
end
return held
