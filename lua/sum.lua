#!lua flags=no-writes,allow-cross-slot-keys
-- sum.lua: sum many series over their ranges in one call — a series is a user (several of
-- their things at once) or a global counter — and optionally list the activities that
-- changed in each range (the "_atids").
--
-- A metric range is read from counters for its whole hours and more, and from the
-- activities' records for the partial hours at its edges (its "windows"); see psd/keys.py.
-- ARGV     flat, numbers as decimal strings (no msgpack: unpacking costs more than a read):
--            want_atids (1 or 0); atid ("" = every type); the number of things and their
--            numbers (0 for global counters); the number of plans; per plan: t1, t2, the
--            number of groups, per group (one counter hash) the number of child ranges and
--            each range's lo, hi, then the number of field names to ask for and the names,
--            thing by thing (built by the caller: Lua's number-to-string conversion costs
--            more than the read; none for a group too wide to ask for by name); then
--            the number of windows and each window's start, end; then per series, in KEYS
--            order: its plan number and 1 if its activity keys follow
-- KEYS     per series: one counter hash per group of its plan, then, when flagged,
--          {uid}:idx and {uid}:acts
-- Returns per series {{hi, lo, hi, lo, ...}[, {aid, atid, aid, atid, ...}]}: one hi, lo per
-- thing; the exact sum is hi * 10^15 + lo (Lua numbers are doubles, exact below 2^53 only).
local tonumber, find, sub, match = tonumber, string.find, string.sub, string.match
local want_atids = ARGV[1] == '1'
local filter = ARGV[2] ~= '' and ARGV[2] or nil
local E15 = 1e15
-- at most this many fields are asked for by name without looking at the hash's size first
local SMALL = 8

local things, thing_index, a = {}, {}, 4
for ti = 1, tonumber(ARGV[3]) do
  things[ti] = tonumber(ARGV[3 + ti])
  thing_index[things[ti]] = ti
end
a = a + #things

local plans = {}
for p = 1, tonumber(ARGV[a]) do
  local plan = {t1 = tonumber(ARGV[a + 1]), t2 = tonumber(ARGV[a + 2]), groups = {},
                fields = {}, windows = {}}
  a = a + 4
  for g = 1, tonumber(ARGV[a - 1]) do
    local ranges, fields = {}, {}
    for i = 1, 2 * tonumber(ARGV[a]) do ranges[i] = tonumber(ARGV[a + i]) end
    a = a + 1 + #ranges
    for i = 1, tonumber(ARGV[a]) do fields[i] = ARGV[a + i] end
    a = a + 1 + #fields
    plan.groups[g], plan.fields[g] = ranges, fields
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
  if sub(v, 1, 1) == '-' then sign, digits = -1, sub(v, 2) end
  hi = hi + sign * tonumber(sub(digits, 1, -16))
  return carry(hi, lo + sign * tonumber(sub(digits, -15)))
end

local function wanted(ranges, child)
  for i = 1, #ranges, 2 do
    if child >= ranges[i] and child <= ranges[i + 1] then return true end
  end
  return false
end

-- add one counter hash's fields in range to his/los (one entry per thing)
local function sum_hash(key, ranges, fields, his, los)
  if #fields > SMALL or #fields == 0 then
    local n = redis.call('HLEN', key)
    if n == 0 then return end
    if 3 * n <= #fields or #fields == 0 then
      -- the hash is no bigger than what we ask for: read it whole, keep the fields in range
      local flat = redis.call('HGETALL', key)
      for j = 1, #flat, 2 do
        local f, slot = flat[j], nil
        if filter == nil then
          slot = tonumber(f)
        else
          local s = find(f, ':', 1, true)
          if s and sub(f, s + 1) == filter then slot = tonumber(sub(f, 1, s - 1)) end
        end
        if slot then
          local thing = slot % 10
          local ti = thing_index[thing]
          if ti and wanted(ranges, (slot - thing) / 10) then
            his[ti], los[ti] = add(his[ti], los[ti], flat[j + 1])
          end
        end
      end
      return
    end
  end
  local vals = redis.call('HMGET', key, unpack(fields))
  local width = #fields / #things  -- fields come thing by thing
  for j = 1, #vals do
    if vals[j] then
      local ti = math.floor((j - 1) / width) + 1
      his[ti], los[ti] = add(his[ti], los[ti], vals[j])
    end
  end
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

-- keep, per activity, the type of its latest change (later things win a tie); found holds
-- three tables: aid -> ts, aid -> thing index, aid -> type (no table per activity)
local function note(found, aid, ts, ti, typ)
  local cur = found[1][aid]
  if cur == nil or ts > cur or (ts == cur and ti > found[2][aid]) then
    found[1][aid], found[2][aid], found[3][aid] = ts, ti, typ
  end
end

-- the type of an activity's latest change in [t1, t2] (after the filter): hours backwards
local function latest_change(acts, id, summary, t1, t2)
  for i = #summary - 1, 5, -2 do
    local h = summary[i]
    if h * 3600 <= t2 and h * 3600 + 3599 >= t1 then
      local chunk = summary[4] > 1 and redis.call('HGET', acts, id .. ':' .. h) or nil
      local changes = changes_of(summary, h, chunk)
      local best, best_typ
      for c = 1, #changes, 3 do
        local ts, t = changes[c], changes[c + 2]
        if ts >= t1 and ts <= t2 and (filter == nil or t == filter)
            and (best == nil or ts >= best) then
          best, best_typ = ts, t
        end
      end
      if best then return best, best_typ end
    end
  end
  return nil
end

-- add the windows' changes of the activities in items (index members with their scores) to
-- his/los, and (want_atids) note in found every activity with a change in [t1, t2] after the
-- type filter; activities that began after upto cannot matter
local function scan(items, acts, t1, t2, windows, upto, his, los, found)
  for j = 1, #items, 2 do
    local thing, typ, aid, first = match(items[j], '^(%d+):([^:]+):([^:]+):(%d+)$')
    local ti = thing_index[tonumber(thing)]
    first = tonumber(first)
    local last = tonumber(items[j + 1])
    if ti and first <= upto then
      local listed = want_atids and last <= t2 and typ ~= '*'
      if listed and (filter == nil or typ == filter) then note(found, aid, last, ti, typ) end
      local look_for_type = want_atids and not listed
      local id, fields, hours
      for i = 1, #windows, 2 do
        if first <= windows[i + 1] and last >= windows[i] then
          if hours == nil then id = thing .. ':' .. aid; fields, hours = {id}, {} end
          hours[#hours + 1] = i
          fields[#fields + 1] = id .. ':' .. hour_of(windows[i])
        end
      end
      if hours or look_for_type then
        id = id or (thing .. ':' .. aid)
        local vals = redis.call('HMGET', acts, unpack(fields or {id}))
        -- an index entry whose state expired first is skipped, not trusted
        local summary = vals[1] and cmsgpack.unpack(vals[1]) or {0, 0, '', 0}
        for n, i in ipairs(hours or {}) do
          local changes = changes_of(summary, hour_of(windows[i]), vals[n + 1])
          for c = 1, #changes, 3 do
            local ts = changes[c]
            if ts >= windows[i] and ts <= windows[i + 1]
                and (filter == nil or changes[c + 2] == filter) then
              his[ti], los[ti] = carry(his[ti], los[ti] + changes[c + 1])
            end
          end
        end
        if look_for_type then
          local ts, t = latest_change(acts, id, summary, t1, t2)
          if ts then note(found, aid, ts, ti, t) end
        end
      end
    end
  end
end
-- the windows' changes from the activities' records, and (want_atids) the activities
local function from_activities(idx, acts, plan, his, los, found)
  local t1, t2, windows = plan.t1, plan.t2, plan.windows
  local span = tonumber(redis.call('HGET', acts, '_span') or '0')
  if want_atids then
    local items = redis.call('ZRANGEBYSCORE', idx, t1, t2 + span, 'WITHSCORES')
    scan(items, acts, t1, t2, windows, t2, his, los, found)
    return
  end
  -- only what changed near each window (at most two): a long range needs nothing between
  for i = 1, #windows, 2 do
    local window = {windows[i], windows[i + 1]}
    local items = redis.call('ZRANGEBYSCORE', idx, window[1], window[2] + span, 'WITHSCORES')
    scan(items, acts, t1, t2, window, window[2], his, los, found)
  end
end

local result, k = {}, 1
while a <= #ARGV do
  local p, with_activities = tonumber(ARGV[a]), ARGV[a + 1] == '1'
  a = a + 2
  local plan = plans[p]
  local his, los = {}, {}
  for ti = 1, #things do his[ti], los[ti] = 0, 0 end
  for g = 1, #plan.groups do
    sum_hash(KEYS[k], plan.groups[g], plan.fields[g], his, los)
    k = k + 1
  end
  local found = {{}, {}, {}}
  if with_activities then
    from_activities(KEYS[k], KEYS[k + 1], plan, his, los, found)
    k = k + 2
  end
  local sums = {}
  for ti = 1, #things do sums[2 * ti - 1], sums[2 * ti] = his[ti], los[ti] end
  if want_atids then
    local flat = {}
    for aid, typ in pairs(found[3]) do flat[#flat + 1] = aid; flat[#flat + 1] = typ end
    result[#result + 1] = {sums, flat}
  else
    result[#result + 1] = {sums}
  end
end
return result
