#!lua flags=no-writes,allow-cross-slot-keys
-- sum.lua: sum counters over ranges for many series (a user's thing, or a global counter) in
-- one call, and optionally list the activities that changed in each range (the "_atids").
--
-- ARGV[1]  msgpack {plans, series, want_atids, atid}
--            plans:  { {t1, t2, groups}, ... }; groups = { {field, ...}, ... }, one field list
--                    per counter hash of the range (see psd/keys.py read_plan)
--            series: { plan number, ... } one per series, in KEYS order
--            want_atids: 1 to list activities (metric series only), 0 not to
--            atid:   "" for every type, else the type (decimal string) to keep
-- KEYS     per series: one counter hash per group of its plan, then, with want_atids,
--          {uid}:<thing>:idx and {uid}:<thing>:acts
-- Returns per series {hi, lo[, {aid, atid, aid, atid, ...}]}: the exact sum is
-- hi * 10^15 + lo (Lua numbers are doubles, exact only below 2^53).
local args = cmsgpack.unpack(ARGV[1])
local plans, series, want_atids, filter = args[1], args[2], args[3] == 1, args[4]
if filter == '' then filter = nil end
local E15 = 1e15
local wanted_cache = {}

local function wanted(p, g)
  local key = p * 4096 + g
  local set = wanted_cache[key]
  if set == nil then
    set = {}
    for _, f in ipairs(plans[p][3][g]) do set[f] = true end
    wanted_cache[key] = set
  end
  return set
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

local function sum_key(key, fields, p, g, hi, lo)
  local n = redis.call('HLEN', key)
  if n == 0 then return hi, lo end
  if n <= #fields or #fields > 1000 then
    -- the hash is no bigger than what we ask for: read it whole and keep our fields
    local flat, set = redis.call('HGETALL', key), wanted(p, g)
    for j = 1, #flat, 2 do
      if set[flat[j]] then hi, lo = add(hi, lo, flat[j + 1]) end
    end
  else
    local vals = redis.call('HMGET', key, unpack(fields))
    for j = 1, #vals do
      if vals[j] then hi, lo = add(hi, lo, vals[j]) end
    end
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
for s = 1, #series do
  local p = series[s]
  local plan = plans[p]
  local groups = plan[3]
  local hi, lo = 0, 0
  for g = 1, #groups do
    hi, lo = sum_key(KEYS[k], groups[g], p, g, hi, lo)
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
