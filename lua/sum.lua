#!lua flags=no-writes,allow-cross-slot-keys
-- sum.lua: sum counters over ranges for many series (a user's thing, or a global counter) in
-- one call, and optionally list the activities that changed in each range (the "_atids").
--
-- Counter fields are <child> * 1000 + <atid> for types below 1000, "<child>:<atid>" above
-- (see psd/keys.py); count hashes use type 0.
-- ARGV     flat, numbers as decimal strings (no msgpack: unpacking costs more than the read):
--            want_atids (1 or 0), atid ("" = every type), number of plans, then per plan:
--            t1, t2, number of groups, then per group: number of child ranges and each
--            range's lo, hi (one group per counter hash of the range, see read_plan);
--            then the plan number of every series, in KEYS order
-- KEYS     per series: one counter hash per group of its plan, then, with want_atids,
--          {uid}:<thing>:idx and {uid}:<thing>:acts
-- Returns per series {hi, lo[, {aid, atid, aid, atid, ...}]}: the exact sum is
-- hi * 10^15 + lo (Lua numbers are doubles, exact only below 2^53).
local want_atids = ARGV[1] == '1'
local filter = ARGV[2] ~= '' and ARGV[2] or nil
local filter_num = filter and tonumber(filter)
local E15 = 1e15
-- a typed read of at most this many fields asks for them by name; others read the hash
local HMGET_MAX = 16

local plans, a = {}, 4
for p = 1, tonumber(ARGV[3]) do
  local plan = {tonumber(ARGV[a]), tonumber(ARGV[a + 1]), {}}
  a = a + 3
  for g = 1, tonumber(ARGV[a - 1]) do
    local ranges = {}
    for i = 1, 2 * tonumber(ARGV[a]) do ranges[i] = tonumber(ARGV[a + i]) end
    a = a + 1 + #ranges
    plan[3][g] = ranges
  end
  plans[p] = plan
end

-- add a decimal string to hi/lo; long strings are split so no digit is lost
local function add(hi, lo, v)
  if #v < 16 then
    lo = lo + tonumber(v)
  else
    local sign, digits = 1, v
    if string.sub(v, 1, 1) == '-' then sign, digits = -1, string.sub(v, 2) end
    hi = hi + sign * tonumber(string.sub(digits, 1, -16))
    lo = lo + sign * tonumber(string.sub(digits, -15))
  end
  if lo >= E15 or lo <= -E15 then
    local q = math.floor(lo / E15)
    hi, lo = hi + q, lo - q * E15
  end
  return hi, lo
end

local function wanted(ranges, child)
  for i = 1, #ranges, 2 do
    if child >= ranges[i] and child <= ranges[i + 1] then return true end
  end
  return false
end

local function width(ranges)
  local n = 0
  for i = 1, #ranges, 2 do n = n + ranges[i + 1] - ranges[i] + 1 end
  return n
end

local function typed_fields(ranges)
  local fields = {}
  for i = 1, #ranges, 2 do
    for c = ranges[i], ranges[i + 1] do
      fields[#fields + 1] = filter_num < 1000 and (c * 1000 + filter_num) or (c .. ':' .. filter)
    end
  end
  return fields
end

local function sum_key(key, ranges, hi, lo)
  if filter and width(ranges) <= HMGET_MAX then
    local vals = redis.call('HMGET', key, unpack(typed_fields(ranges)))
    for j = 1, #vals do
      if vals[j] then hi, lo = add(hi, lo, vals[j]) end
    end
    return hi, lo
  end
  local flat = redis.call('HGETALL', key)
  for j = 1, #flat, 2 do
    local f = flat[j]
    local n = tonumber(f)
    local child, ok
    if n then
      local typ = n % 1000
      child, ok = (n - typ) / 1000, filter == nil or typ == filter_num
    else
      local p = string.find(f, ':', 1, true)
      child, ok = tonumber(string.sub(f, 1, p - 1)), filter == nil or string.sub(f, p + 1) == filter
    end
    if ok and wanted(ranges, child) then hi, lo = add(hi, lo, flat[j + 1]) end
  end
  return hi, lo
end

-- activities with a change in [t1, t2] (after the type filter): {aid, atid, ...}
local function activities(idx, acts, t1, t2)
  local out = {}
  local span = tonumber(redis.call('HGET', acts, '_span') or '0')
  local items = redis.call('ZRANGEBYSCORE', idx, t1, t2 + span, 'WITHSCORES')
  for j = 1, #items, 2 do
    local typ, aid, first = string.match(items[j], '^([^:]+):([^:]+):(%d+)$')
    local last = tonumber(items[j + 1])
    if tonumber(first) <= t2 then
      if last <= t2 and typ ~= '*' then
        if filter == nil or typ == filter then
          out[#out + 1] = aid; out[#out + 1] = typ
        end
      else
        -- the activity spans the range end or changed type: look at its changes
        local rec = cmsgpack.unpack(redis.call('HGET', acts, aid))
        local best, best_typ
        for i = 1, #rec, 3 do
          local ts, t = rec[i], rec[i + 2]
          if ts >= t1 and ts <= t2 and (filter == nil or t == filter)
              and (best == nil or ts >= best) then
            best, best_typ = ts, t
          end
        end
        if best then out[#out + 1] = aid; out[#out + 1] = best_typ end
      end
    end
  end
  return out
end

local result, k = {}, 1
for s = 1, #ARGV - a + 1 do
  local plan = plans[tonumber(ARGV[a + s - 1])]
  local groups = plan[3]
  local hi, lo = 0, 0
  for g = 1, #groups do
    hi, lo = sum_key(KEYS[k], groups[g], hi, lo)
    k = k + 1
  end
  if want_atids then
    result[s] = {hi, lo, activities(KEYS[k], KEYS[k + 1], plan[1], plan[2])}
    k = k + 2
  else
    result[s] = {hi, lo}
  end
end
return result
