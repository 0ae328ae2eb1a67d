-- limits.lua: included by the write scripts where they say "-- #include limits.lua". Why a
-- write never overflows: every counter field stays within ±2^62 before and after each call,
-- and a call adds at most PAY_EVERY (CALL_POINTS of psd/batching.py) points of at most
-- ±2^42 each to a field before it checks, so HINCRBY (int64: ±2^63) cannot fail, and the
-- sums owed stay exact Lua doubles (below 2^51). A field found past ±2^62 makes the caller
-- take back (exactly) what it added and refuse the point at fault. The numbers of an
-- activity's record are Lua doubles: they are kept within ±2^53, where doubles are exact.
local COUNTER_LIMIT = 2^62
local RECORD_LIMIT = 2^53
local COUNTER_DIGITS = '4611686018427387904'  -- COUNTER_LIMIT, exactly
local MAX_CHANGE = 2^42
-- A user's pending increments (pending.lua) are applied without refusal: a log holds at most
-- 256 points of at most ±2^40, so every other write keeps its fields HEADROOM inside the
-- limits (write_metric.lua's use_limits), and a log's points always fit.
local HEADROOM = 2^48
local PAY_EVERY = 400
local type_of = type

-- the field is past COUNTER_LIMIT, read exactly (a double near 2^62 is off by <= 256)
local function past_limit(key, field)
  local digits = (redis.call('HGET', key, field) or '0'):gsub('^-', '')
  return #digits > 19 or (#digits == 19 and digits > COUNTER_DIGITS)
end

-- whether HINCRBY's answer n (from redis.pcall) is refused, and then whether it added
-- anything (to take back): n is no number (the field is no integer, or past int64), or past
-- ±2^62. Callers test the usual case, a number within ±2^62, inline: a call costs 3%.
local function refused(key, field, n)
  if type(n) ~= 'number' then return true, false end
  return (n >= COUNTER_LIMIT or n <= -COUNTER_LIMIT) and past_limit(key, field), true
end

-- add delta to a counter field: its new value, or nil when refused (then true: take it back)
local function add(key, field, delta)
  local n = redis.pcall('HINCRBY', key, field, delta)
  local no, added = refused(key, field, n)
  if no then return nil, added end
  return n
end

-- take an addition back (exact: the field stays within int64); a field back at 0 goes, as
-- it was (absent) before its first addition
local function take_back(key, field, delta)
  if redis.call('HINCRBY', key, field, -delta) == 0 then redis.call('HDEL', key, field) end
end

-- a record's number stays exact
local function exact(x) return x < RECORD_LIMIT and x > -RECORD_LIMIT end
