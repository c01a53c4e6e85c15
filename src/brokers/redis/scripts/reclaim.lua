-- reclaim.lua: take over entries whose lease expired (their consumer stopped renewing).
-- KEYS[1] stream ${prefix}:stream:{Q}, KEYS[2] pulse ${prefix}:pulse:{Q} (fleet-pulse.lua)
-- ARGV[1] group, ARGV[2] this consumer, ARGV[3] min idle ms, ARGV[4] cursor (pending entry id
-- to look from; "0-0" at the start), ARGV[5] count (most entries to take), ARGV[6] most pending
-- entries looked at by XPENDING's IDLE filter, ARGV[7] most pending entries of one page,
-- ARGV[8] Redis time (ms) of this consumer's last reply before this call (0: unknown), ARGV[9]
-- a gap since then longer than this (ms) is a stall, ARGV[10] extra idle ms required (the
-- consumer's out-of-touch window; redis-contact.ts), ARGV[11] the consumer that holds
-- given-back entries (RELEASED_CONSUMER in redis-keys.ts)
-- Returns { next cursor ("0-0" once the pending list was looked at to its end),
-- { id, fields, deliveryCount, id, fields, deliveryCount, ... }, Redis time ms, extra idle ms
-- of this consumer's own (its window, or the stall this call ran after), extra idle ms of the
-- stream's window (fleet-pulse.lua; 0: none), 1 when this call opened that window, the number
-- of entries pending for consumers (given-back ones not counted) before this call's claims,
-- when it opened the window (else 0) }.
-- Entries are taken when idle longer than the min idle plus the extra. When this call ran
-- after a stall that began after this consumer's last reply (Redis frozen or restarting while
-- the call was on its way), the gap is the extra: the live owners were cut off as long as this
-- consumer, and their renewals are on their way too. The stream's window (fleet-pulse.lua)
-- applies too: opened when no consumer called on this stream for longer than the threshold (a
-- stall this consumer may not have seen, having started during it), or by this consumer's own
-- stall when nobody called during it, so that consumers that did not see it wait as well.
-- Given-back entries (release.lua: a stopping worker's read-ahead, or its jobs past the
-- shutdown timeout) are taken at the min idle alone, window or not: no owner renews them, so
-- there is nobody to wait for.
-- Finds the expired entries however few free slots the caller has (XAUTOCLAIM looks at no more
-- than ten times its COUNT per call: a worker with one free slot would crawl through a busy
-- fleet's pending list ten entries per call), in a call of bounded length (the pending list of
-- a large fleet is long, and Redis runs one script at a time):
-- - a group with at most ARGV[6] pending entries: XPENDING's IDLE filter, in Redis's own code
--   (fast), from the cursor to the end;
-- - a longer one: one page of ARGV[7] pending entries from the cursor, filtered here (each
--   entry crosses into Lua: slower per entry, so the page is smaller).
-- Atomic: the entries are claimed in the step that found them, and the delivery counter of
-- each (previous deliveries + this one) is the real one for the poison check.
-- Composed at load time below claimEntries (claim-entries.lua), fleetPulse (fleet-pulse.lua)
-- and heldCount (held-count.lua).
-- With Redis full, as renew.lua: the first write is an XACK of id 0-0, so that the pulse's
-- HSET is not refused (XCLAIM would not be).
-- The cursor that goes on after entry `id`: "(id", or back to the start after the last possible
-- id (an entry added by hand with it), which "(" cannot follow (XPENDING refuses the range).
local function after(id)
  if id == '18446744073709551615-18446744073709551615' then
    return '0-0'
  end
  return '(' .. id
end
redis.call('XACK', KEYS[1], ARGV[1], '0-0') -- exempts the writes below from the memory limit
local time = redis.call('TIME')
local nowMs = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local extra, lastReply = tonumber(ARGV[10]), tonumber(ARGV[8])
if lastReply > 0 and nowMs - lastReply > tonumber(ARGV[9]) then
  extra = math.max(extra, nowMs - lastReply)
end
local pulse = fleetPulse(KEYS[2], nowMs, tonumber(ARGV[9]), tonumber(ARGV[3]), extra)
local leaseIdle, want = tonumber(ARGV[3]), tonumber(ARGV[5])
local minIdle = leaseIdle + math.max(extra, pulse[1])
local scanLimit, pageSize = tonumber(ARGV[6]), tonumber(ARGV[7])
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
-- (counted only for the log line of a window this call opened)
local held = 0
if pulse[2] == 1 then
  held = heldCount(summary, ARGV[11])
end
local counts = {}
-- Given-back entries first, when a window asks more of the others (else the scan below finds
-- them at the same idle): the released consumer's own pending list, short. When they fill the
-- count, the scan waits for the next call (within 100 ms: the cursor says it is not done).
local released = {}
if minIdle > leaseIdle then
  for i, p in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', leaseIdle, '-', '+', want, ARGV[11])) do
    released[i] = p[1]
    counts[p[1]] = p[4]
  end
  want = want - #released
end
local ids = {}
-- Takes pending entry `p` (an XPENDING row) unless taken already; true once `want` are taken.
local function take(p)
  if not counts[p[1]] then
    ids[#ids + 1] = p[1]
    counts[p[1]] = p[4]
  end
  return #ids >= want
end
local cursor = '0-0'
if want <= 0 then
  -- (full with given-back entries: the scan goes on from where it was, soon)
  cursor = ARGV[4] == '0-0' and '-' or ARGV[4]
elseif summary[1] <= scanLimit then
  -- (given-back entries taken above may be listed again: as many more are asked for, and skipped)
  local expired = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', minIdle, ARGV[4], '+', want + #released)
  for _, p in ipairs(expired) do
    if take(p) then
      break
    end
  end
else
  local page = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[4], '+', pageSize)
  for _, p in ipairs(page) do
    if p[3] >= minIdle and take(p) then
      break
    end
  end
  if #page >= pageSize then
    cursor = after(page[#page][1])
  end
end
-- Enough taken: the next call goes on after the last one (else the cursor stands as set above).
if want > 0 and #ids >= want then
  cursor = after(ids[#ids])
end
local out = {}
if #released > 0 then
  out = claimEntries(KEYS[1], ARGV[1], ARGV[2], leaseIdle, released, counts, nil)
end
if #ids > 0 then
  for _, v in ipairs(claimEntries(KEYS[1], ARGV[1], ARGV[2], minIdle, ids, counts, nil)) do
    out[#out + 1] = v
  end
end
return { cursor, out, nowMs, extra, pulse[1], pulse[2], held }
