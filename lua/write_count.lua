#!lua
-- write_count.lua: add to a global counter (no user, no type) atomically.
--
-- KEYS[1..6]  counter hashes root, year, month, day, hour, minute of ts (c:{<thing>}:...)
-- ARGV[1]     value (may be negative)
-- ARGV[2..7]  child field of each hash (year, month, day, hour, minute, second)
-- ARGV[8..13] Unix time at which each hash expires, 0 = never
-- Returns the new value of the second's field.
local value = tonumber(ARGV[1])
local n = 0
for i = 1, 6 do
  local key, expire_at = KEYS[i], tonumber(ARGV[7 + i])
  n = redis.call('HINCRBY', key, ARGV[1 + i], value)
  if n == value and expire_at > 0 then
    redis.call('EXPIREAT', key, expire_at, 'NX')
    if i == 1 then redis.call('EXPIREAT', key, expire_at, 'GT') end
  end
end
return n
