-- store-results-unless-final.lua: write the terminal records whose key holds no terminal record
-- yet (none, or PENDING / STARTED / RETRY), and announce those written, as store-results.lua
-- does (same KEYS and ARGV). Composed at load time: the text of store-results.lua becomes the
-- function storeResults(KEYS, ARGV) above this body, called with the records kept, and
-- holds-final.lua the function holdsFinal(key).
-- Returns one number per record: 1 written, 0 left (a terminal record was there).
-- For the outcome of a job whose stream entry was gone when its worker acknowledged it: lost
-- in a Redis restart without persistence (nobody will run it again: its record is this run's
-- or none), or settled by another worker that took it over (its own final record stays).
-- Atomic: the check and the write cannot interleave with another write of the same task.
local keys, argv, written = {}, { ARGV[1], ARGV[2], ARGV[3], ARGV[4] }, {}
for i = 1, #KEYS do
  if holdsFinal(KEYS[i]) then
    written[i] = 0
  else
    keys[#keys + 1] = KEYS[i]
    argv[#argv + 1] = ARGV[4 + i]
    written[i] = 1
  end
end
if #keys > 0 then
  storeResults(keys, argv)
end
return written
