-- store-results-unless-final.lua: write the terminal records whose key holds no terminal record
-- yet (none, or PENDING / STARTED / RETRY), and announce those written, as store-results.lua
-- does (same KEYS and ARGV).
-- Returns one number per record: 1 written, 0 left (a terminal record was there).
-- For the outcome of a job whose stream entry was gone when its worker acknowledged it: lost
-- in a Redis restart without persistence (nobody will run it again: its record is this run's
-- or none), or settled by another worker that took it over (its own final record stays).
-- Atomic: the check and the write cannot interleave with another write of the same task. Only
-- the first bytes of a stored record are read (GETRANGE), however large its result.
local ttl = ARGV[1]
local idFrom = tonumber(ARGV[3]) + 1
local inlineMax = tonumber(ARGV[4])
local notes = {}
local written = {}
for i = 1, #KEYS do
  local head = redis.call('GETRANGE', KEYS[i], 0, 40)
  local state = string.match(head, '^{"state":"([%u_]+)"')
  if state == 'SUCCESS' or state == 'FAILURE' or state == 'DEAD_LETTERED' then
    written[i] = 0
  else
    local json = ARGV[4 + i]
    if ttl == '0' then
      redis.call('SET', KEYS[i], json)
    else
      redis.call('SET', KEYS[i], json, 'EX', ttl)
    end
    if #json <= inlineMax then
      notes[#notes + 1] = json
    else
      notes[#notes + 1] = cjson.encode(string.sub(KEYS[i], idFrom))
    end
    written[i] = 1
  end
end
if #notes > 0 then
  redis.pcall('PUBLISH', ARGV[2], '[' .. table.concat(notes, ',') .. ']') -- best effort, as in store-results.lua
end
return written
