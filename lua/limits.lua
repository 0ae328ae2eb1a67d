-- limits.lua: included by the write scripts where they say "-- #include limits.lua". Why a
-- write never overflows: every counter field stays within ±2^62 before and after each call,
-- and a call adds at most WRITE_BATCH (psd/batching.py) points of at most ±2^42 to a field
-- between two checks, so HINCRBY (int64: ±2^63) cannot fail. A field found past ±2^62
-- after them makes the caller undo them (exact) and refuse the point at fault. Numbers of
-- an activity's record are Lua doubles: they are kept within ±2^53, where doubles are exact.
local COUNTER_LIMIT = 2^62
local RECORD_LIMIT = 2^53
local MAX_CHANGE = 2^42
local PAY_EVERY = 100  -- WRITE_BATCH
local paid = {}  -- key, field, delta of each increment made and not undone, in order

-- the field is past ±2^62, read exactly (the double of a number near 2^62 is off by <= 256)
local function past_limit(key, field)
  local digits = (redis.call('HGET', key, field) or '0'):gsub('^-', '')
  return #digits > 19 or (#digits == 19 and digits > '4611686018427387904')
end

-- add delta to a counter field: its new value, or false when that is past ±2^62 (undo it
-- with the rest) or the field could not take it (not an integer: nothing was added)
local function pay(key, field, delta)
  local n = redis.pcall('HINCRBY', key, field, delta)
  if type(n) ~= 'number' then return false end
  local m = #paid
  paid[m + 1] = key; paid[m + 2] = field; paid[m + 3] = delta
  if (n >= COUNTER_LIMIT or n <= -COUNTER_LIMIT) and past_limit(key, field) then return false end
  return n
end

-- undo the increments made since paid[mark], newest first; a field back at 0 goes, as it
-- was (absent) before a first increment
local function unpay(mark)
  for i = #paid - 2, mark, -3 do
    if redis.call('HINCRBY', paid[i], paid[i + 1], -paid[i + 2]) == 0 then
      redis.call('HDEL', paid[i], paid[i + 1])
    end
    paid[i] = nil; paid[i + 1] = nil; paid[i + 2] = nil
  end
end

-- a record's number stays exact
local function exact(x) return x < RECORD_LIMIT and x > -RECORD_LIMIT end
