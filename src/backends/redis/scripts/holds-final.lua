-- holds-final.lua: the body of the local function holdsFinal(key), composed at load time above
-- the scripts that must not replace a terminal record (store-record.lua,
-- store-results-unless-final.lua, store-pieces.lua): true when `key` holds a record in a
-- terminal state (SUCCESS, FAILURE, DEAD_LETTERED). A record's JSON starts with
-- {"state":"..." (encodeRecord): only its first bytes are read (GETRANGE), however large the
-- result; a missing key reads as empty.
local state = string.match(redis.call('GETRANGE', key, 0, 40), '^{"state":"([%u_]+)"')
return state == 'SUCCESS' or state == 'FAILURE' or state == 'DEAD_LETTERED'
