-- assert-type.lua: the body of the local function assertType(key, want), composed at load time
-- above the settle scripts that write to keys besides the entry they settle (the DLQ, the
-- delayed set), and above the DLQ replay (the work stream, the unique set): fails the call
-- when `key` holds a value of another type than `want` (an operator's SET at a DLQ key, say).
-- Called before the script's first write: Redis does not undo a script's writes when a later
-- command fails, so a settle failing after its XACK/XDEL would lose the message, and a replay
-- failing after its XDEL the dead letter; failing first leaves the message pending, to be
-- redelivered, or the entry in the DLQ.
-- A stream must also have ids left: once an entry with the last possible id was added (by hand,
-- `XADD key 18446744073709551615-18446744073709551615 ...`), even if deleted since, every
-- `XADD key *` fails ("exhausted the last possible ID"), so it is checked here too.
local found = redis.call('TYPE', key)['ok']
if found ~= 'none' and found ~= want then
  error({ err = 'WRONGTYPE key ' .. key .. ' holds a ' .. found .. ', not a ' .. want .. ' (nothing was changed)' })
end
if found == 'stream' then
  -- (a user whose ACL refuses XINFO: not checked)
  local info = redis.pcall('XINFO', 'STREAM', key)
  if type(info) ~= 'table' or info.err then
    return
  end
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      if info[i + 1] == '18446744073709551615-18446744073709551615' then
        error({ err = 'ERR stream ' .. key .. ' has used its last possible entry id (an entry with id 18446744073709551615-18446744073709551615 was added to it): no entry can be added (nothing was changed)' })
      end
      break
    end
  end
end
