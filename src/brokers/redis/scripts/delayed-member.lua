-- delayed-member.lua: the body of the local function addDelayed(zset, bodies, id, dueMs, body),
-- composed at load time above the scripts that schedule a delayed message (publish.lua,
-- publish-delayed.lua, retry.lua): adds the message to the delayed set (score = due ms) and its
-- body to the bodies hash, under one member.
-- The member is the task id. When the set holds that id already (another message of the same
-- task id: a publish without `unique`, or one after an at-most-once run freed the id's marker,
-- beside that run's delayed retry), the member is the id, byte 255 and a number (2, 3, ...): both
-- messages are kept, neither replaces the other. Byte 255 never occurs in UTF-8 text, so a task
-- id cannot take that form; move-delayed.lua and purge-queue.lua read the task id back as the
-- part before it.
local member = id
local n = 1
while redis.call('ZADD', zset, 'NX', dueMs, member) == 0 do
  n = n + 1
  member = id .. '\255' .. n
end
redis.call('HSET', bodies, member, body)
