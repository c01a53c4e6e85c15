-- assert-type.lua: the body of the local function assertType(key, want), composed at load time
-- above the settle scripts that write to keys besides the entry they settle (the DLQ, the
-- delayed set), and above the DLQ replay (the work stream, the unique set): fails the call
-- when `key` holds a value of another type than `want` (an operator's SET at a DLQ key, say).
-- Called before the script's first write: Redis does not undo a script's writes when a later
-- command fails, so a settle failing after its XACK/XDEL would lose the message, and a replay
-- failing after its XDEL the dead letter; failing first leaves the message pending, to be
-- redelivered, or the entry in the DLQ.
local found = redis.call('TYPE', key)['ok']
if found ~= 'none' and found ~= want then
  error({ err = 'WRONGTYPE key ' .. key .. ' holds a ' .. found .. ', not a ' .. want .. ' (nothing was changed)' })
end
