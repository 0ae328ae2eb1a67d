#!lua flags=no-writes,allow-cross-slot-keys
-- sum.lua: sum many series (a user's thing, or a global counter) over their ranges in one
-- call, and optionally list the activities that changed in each range (the "_atids").
--
-- A metric range is read from counters for its whole hours and more, and from the
-- activities' records for the partial hours at its edges (its "windows"); see psd/keys.py.
-- ARGV     flat, numbers as decimal strings (no msgpack: unpacking costs more than a read):
--            want_atids (1 or 0); atid ("" = every type); number of plans; per plan: t1, t2,
--            number of groups, per group (one counter hash) the number of child ranges and
--            each range's lo, hi; then the number of windows and each window's start, end;
--            then per series, in KEYS order: its plan number and 1 if its activity keys follow
-- KEYS     per series: one counter hash per group of its plan, then, when flagged,
--          {uid}:<thing>:idx and {uid}:<thing>:acts
-- Returns per series {hi, lo[, {aid, atid, aid, atid, ...}]}: the exact sum is
-- hi * 10^15 + lo (Lua numbers are doubles, exact only below 2^53).
local want_atids = ARGV[1] == '1'
local filter = ARGV[2] ~= '' and ARGV[2] or nil
local E15 = 1e15
-- groups of at most this many fields are asked for by name without looking at the hash first
local SMALL = 8

local plans, a = {}, 4
for p = 1, tonumber(ARGV[3]) do
  local plan = {t1 = tonumber(ARGV[a]), t2 = tonumber(ARGV[a + 1]), groups = {}, windows = {}}
  a = a + 3
  for g = 1, tonumber(ARGV[a - 1]) do
    local ranges = {}
    for i = 1, 2 * tonumber(ARGV[a]) do ranges[i] = tonumber(ARGV[a + i]) end
    a = a + 1 + #ranges
    plan.groups[g] = ranges
  end
  for i = 1, 2 * tonumber(ARGV[a]) do plan.windows[i] = tonumber(ARGV[a + i]) end
  a = a + 1 + #plan.windows
  plans[p] = plan
end

local function carry(hi, lo)
  if lo >= E15 or lo <= -E15 then
    local q = math.floor(lo / E15)
    return hi + q, lo - q * E15
  end
  return hi, lo
end

-- add a decimal string to hi/lo; long strings are split so no digit is lost
local function add(hi, lo, v)
  if #v < 16 then return carry(hi, lo + tonumber(v)) end
  local sign, digits = 1, v
  if string.sub(v, 1, 1) == '-' then sign, digits = -1, string.sub(v, 2) end
  hi = hi + sign * tonumber(string.sub(digits, 1, -16))
  return carry(hi, lo + sign * tonumber(string.sub(digits, -15)))
end

local function wanted(ranges, child)
  for i = 1, #ranges, 2 do
    if child >= ranges[i] and child <= ranges[i + 1] then return true end
  end
  return false
end

local field_cache = {}
-- the field names of a group: "<child>" for every type, "<child>:<atid>" for one
local function fields_of(p, g, ranges)
  local key = p * 4096 + g
  local fields = field_cache[key]
  if fields == nil then
    fields = {}
    for i = 1, #ranges, 2 do
      for c = ranges[i], ranges[i + 1] do
        fields[#fields + 1] = filter and (c .. ':' .. filter) or c
      end
    end
    field_cache[key] = fields
  end
  return fields
end

local function sum_hash(key, p, g, ranges, hi, lo)
  local fields = fields_of(p, g, ranges)
  if #fields > SMALL then
    local n = redis.call('HLEN', key)
    if n == 0 then return hi, lo end
    if n <= #fields or #fields > 4000 then
      -- the hash is no bigger than what we ask for: read it whole, keep the fields in range
      local flat = redis.call('HGETALL', key)
      for j = 1, #flat, 2 do
        local f = flat[j]
        if filter == nil then
          local c = tonumber(f)
          if c and wanted(ranges, c) then hi, lo = add(hi, lo, flat[j + 1]) end
        else
          local s = string.find(f, ':', 1, true)
          if s and string.sub(f, s + 1) == filter
              and wanted(ranges, tonumber(string.sub(f, 1, s - 1))) then
            hi, lo = add(hi, lo, flat[j + 1])
          end
        end
      end
      return hi, lo
    end
  end
  local vals = redis.call('HMGET', key, unpack(fields))
  for j = 1, #vals do
    if vals[j] then hi, lo = add(hi, lo, vals[j]) end
  end
  return hi, lo
end

local function hour_of(ts) return math.floor(ts / 3600) end

-- an activity's changes in one hour, {ts, amount, atid, ...}, given its summary (see
-- write_metric.lua) and, when it has several changes, that hour's stored chunk
local function changes_of(summary, h, chunk)
  if summary[4] == 1 then
    return summary[5] == h and {summary[1], summary[6], summary[3]} or {}
  end
  return chunk and cmsgpack.unpack(chunk) or {}
end

-- the windows' changes from the activities' records, and (want_atids) every activity with a
-- change in [t1, t2] after the type filter as {aid, atid, ...}
local function from_activities(idx, acts, plan, hi, lo)
  local t1, t2, windows = plan.t1, plan.t2, plan.windows
  local from, to = t1, t2
  if not want_atids then from, to = windows[1], windows[#windows] end
  local span = tonumber(redis.call('HGET', acts, '_span') or '0')
  local items = redis.call('ZRANGEBYSCORE', idx, from, to + span, 'WITHSCORES')
  local out = {}
  for j = 1, #items, 2 do
    local typ, aid, first = string.match(items[j], '^([^:]+):([^:]+):(%d+)$')
    first = tonumber(first)
    local last = tonumber(items[j + 1])
    if first <= to then
      local listed = want_atids and last <= t2 and typ ~= '*'
      if listed and (filter == nil or typ == filter) then
        out[#out + 1] = aid; out[#out + 1] = typ
      end
      local look_for_type = want_atids and not listed
      local fields, hours = {aid}, {}
      for i = 1, #windows, 2 do
        if first <= windows[i + 1] and last >= windows[i] then
          hours[#hours + 1] = i
          fields[#fields + 1] = aid .. ':' .. hour_of(windows[i])
        end
      end
      if #hours > 0 or look_for_type then
        local vals = redis.call('HMGET', acts, unpack(fields))
        local summary = cmsgpack.unpack(vals[1])
        for n, i in ipairs(hours) do
          local changes = changes_of(summary, hour_of(windows[i]), vals[n + 1])
          for c = 1, #changes, 3 do
            local ts = changes[c]
            if ts >= windows[i] and ts <= windows[i + 1]
                and (filter == nil or changes[c + 2] == filter) then
              hi, lo = carry(hi, lo + changes[c + 1])
            end
          end
        end
        if look_for_type then
          -- the type of its latest change in [t1, t2] (after the filter): hours backwards
          local best, best_typ
          for i = #summary - 1, 5, -2 do
            local h = summary[i]
            if h * 3600 <= t2 and h * 3600 + 3599 >= t1 then
              local chunk = summary[4] > 1 and redis.call('HGET', acts, aid .. ':' .. h) or nil
              local changes = changes_of(summary, h, chunk)
              for c = 1, #changes, 3 do
                local ts, t = changes[c], changes[c + 2]
                if ts >= t1 and ts <= t2 and (filter == nil or t == filter)
                    and (best == nil or ts >= best) then
                  best, best_typ = ts, t
                end
              end
              if best then break end
            end
          end
          if best then out[#out + 1] = aid; out[#out + 1] = best_typ end
        end
      end
    end
  end
  return hi, lo, out
end

local result, k = {}, 1
local s = 0
while a <= #ARGV do
  local p, with_activities = tonumber(ARGV[a]), ARGV[a + 1] == '1'
  a = a + 2
  local plan = plans[p]
  local hi, lo = 0, 0
  for g = 1, #plan.groups do
    hi, lo = sum_hash(KEYS[k], p, g, plan.groups[g], hi, lo)
    k = k + 1
  end
  s = s + 1
  if with_activities then
    local found
    hi, lo, found = from_activities(KEYS[k], KEYS[k + 1], plan, hi, lo)
    k = k + 2
    result[s] = want_atids and {hi, lo, found} or {hi, lo}
  else
    result[s] = want_atids and {hi, lo, {}} or {hi, lo}
  end
end
return result
