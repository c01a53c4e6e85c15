-- renew.lua: renew the leases of this consumer's unsettled entries.
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] pulse ${prefix}:pulse:{Q} (fleet-pulse.lua)
-- ARGV[1] group, ARGV[2] this consumer, ARGV[3] stall threshold ms (0: no pulse check), ARGV[4]
-- the lease (claim idle ms), ARGV[5..n] entry ids
-- Returns { lost, gone, noGroup, extra, opened, sure }: `lost` the ids another consumer holds or will
-- be handed (holderOf 1), `gone` the ids nobody holds that left the stream (holderOf 2),
-- `noGroup` 1 when the group does not exist (then nothing was renewed), else 0; `extra`,
-- `opened` and `sure` the stream's window as fleetPulse returns it. Without ids it only keeps the pulse
-- (a consumer whose slots are all busy with nothing to renew: see redis-consumer.ts #touch).
-- Composed below holderOf (holder-of.lua) and fleetPulse (fleet-pulse.lua): a renewal is a
-- live consumer's call on this stream, and when it is the first after a stall, it opens the
-- window that keeps every consumer's reclaim away from the live owners' entries.
-- Atomic: the owner check and the XCLAIM (min idle 0, JUSTID: resets idle without counting a
-- delivery) happen together, so a renewal never steals an entry another consumer reclaimed.
-- With Redis full (maxmemory, noeviction), renewals still go on: the first write is an XACK of
-- id 0-0 (never exists, never fails; XCLAIM itself is not refused), and Redis checks only a
-- script's first write against the limit, which the pulse's HSET would fail.
redis.call('XACK', KEYS[1], ARGV[1], '0-0') -- exempts the writes below from the memory limit
local time = redis.call('TIME')
local pulse = fleetPulse(KEYS[2], tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000), tonumber(ARGV[3]), tonumber(ARGV[4]), 0)
local owned, lost, gone = {}, {}, {}
for i = 5, #ARGV do
  local holder = holderOf(KEYS[1], ARGV[1], ARGV[2], ARGV[i])
  if holder == 0 then
    owned[#owned + 1] = ARGV[i]
  elseif holder == 1 then
    lost[#lost + 1] = ARGV[i]
  else
    gone[#gone + 1] = ARGV[i]
  end
end
if #owned > 0 then
  -- One argument table: unpack() in the middle of an argument list yields only its first value.
  local args = { 'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0 }
  for _, id in ipairs(owned) do
    args[#args + 1] = id
  end
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
end
local noGroup = 0
if #owned < #ARGV - 4 then
  local summary = redis.pcall('XPENDING', KEYS[1], ARGV[1])
  if type(summary) == 'table' and summary.err and string.find(summary.err, 'NOGROUP', 1, true) then
    noGroup = 1
  end
end
return { lost, gone, noGroup, pulse[1], pulse[2], pulse[3] }
