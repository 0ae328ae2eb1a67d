-- broker_inflight.lua: give back to their queue the messages a Redis broker's consumer took
-- and never recorded (psd/workers/transport.py: a consumer killed between its BLMOVE and
-- the record of the message as unacknowledged). A message waits in the queue's in-flight
-- list only for that moment: one seen there over two passes a visibility timeout apart was
-- taken by a consumer that is gone.
--
-- KEYS[1] the queue's in-flight list, KEYS[2] when each of its messages was first seen
--         there (a hash by the message's SHA-1), KEYS[3] the queue
-- ARGV[1] now (seconds), ARGV[2] the visibility timeout (seconds)
-- Returns how many messages went back to the queue.
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local seen = redis.call('HGETALL', KEYS[2])
local first = {}
for i = 1, #seen, 2 do first[seen[i]] = tonumber(seen[i + 1]) end
local now, timeout = tonumber(ARGV[1]), tonumber(ARGV[2])
local kept, back = {}, 0
for _, item in ipairs(items) do
  local id = redis.sha1hex(item)
  local since = first[id]
  if since == nil then
    redis.call('HSET', KEYS[2], id, now)
    kept[id] = true
  elseif now - since >= timeout then
    -- next to be taken (a consumer takes from the right), as kombu gives back a message
    redis.call('LREM', KEYS[1], 1, item)
    redis.call('RPUSH', KEYS[3], item)
    back = back + 1
  else
    kept[id] = true
  end
end
for id, _ in pairs(first) do
  if not kept[id] then redis.call('HDEL', KEYS[2], id) end
end
return back
