-- sumhours.lua: included by sum.lua where it says "-- #include sumhours.lua" (it uses that
-- script's filter, hilo.lua's sums and hours.lua's unpack_hours): a month's hours as a read
-- adds them — packed in the month's hash by half-day, and its open day's in a hash of their
-- own (hours.lua). breakdown.lua uses read_packed, lone.lua open_day_key.

-- the packed hours a group or a breakdown's hash asks for (part: psd.scriptargs.HoursArg):
-- each field's hours by its number, and the one of its days that is the month's open day,
-- if any: that day's hours are in its own hash (hours.lua). Their values from vals[off + 1]
-- on when they came with the group's fields (sum_hash), else asked for here
-- the one of a group's days (part[4]) that its month's "o" (raw: as HMGET answered it) names
-- as an earlier psd's open day, or nil
local function open_in(part, raw)
  if raw then
    local open = raw + 0
    for _, day in ipairs(part[4]) do
      if day == open then return day end
    end
  end
  return nil
end

local function read_packed(key, part, vals, off)
  local names = part[1]
  if vals == nil then vals, off = redis.call('HMGET', key, unpack(names)), 0 end
  local tables = {}
  for i = 1, #names - 1 do
    local raw = vals[off + i]
    if raw then tables[i] = unpack_hours(raw) end
  end
  return tables, open_in(part, vals[off + #names])
end

-- the formats of a fixed half-day's first n hours (hours.lua's FIXED is the twelve)
local FIXED_OF = {}
for n = 1, 12 do FIXED_OF[n] = '>' .. string.rep('i4', n) end

-- the sum of hours first to last (1-12) of a fixed half-day (raw), each within ±2^31, so
-- exact: only those hours unpacked (struct's cost is by the value), into locals (no
-- table), and added by how many they are (the one after the last is struct's next position)
local function fixed_sum(raw, first, last)
  local n = last - first + 1
  local a, b, c, d, e, f, g, h, i, j, k, l = struct.unpack(FIXED_OF[n], raw, 4 * first - 2)
  if n <= 6 then
    if n <= 3 then
      if n == 1 then return a elseif n == 2 then return a + b end
      return a + b + c
    elseif n == 4 then return a + b + c + d
    elseif n == 5 then return a + b + c + d + e end
    return a + b + c + d + e + f
  elseif n <= 9 then
    if n == 7 then return a + b + c + d + e + f + g
    elseif n == 8 then return a + b + c + d + e + f + g + h end
    return a + b + c + d + e + f + g + h + i
  elseif n == 10 then return a + b + c + d + e + f + g + h + i + j
  elseif n == 11 then return a + b + c + d + e + f + g + h + i + j + k end
  return a + b + c + d + e + f + g + h + i + j + k + l
end

-- a counter field's name: a slot's decimal string. Kept from call to call, as the library's
-- functions are (a name is the same for every call): turning a number into a string costs
-- more than asking a field
local slot_names = {}
local function slot_name(slot)
  local name = slot_names[slot]
  if name == nil then
    name = tostring(slot)
    slot_names[slot] = name
  end
  return name
end

-- the hash of day `dom` of a month's (or its twin's) hash {uid}:[t]mYYYYMM, as hours.lua's
-- day_key names it, without a pattern or a number turned into a string
local DOMS = {}
for dom = 1, 31 do DOMS[dom] = string.format('%02d', dom) end
local function open_day_key(month_key, dom)
  return sub(month_key, 1, -8) .. 'd' .. sub(month_key, -6) .. DOMS[dom]
end

-- the fields of a month's open day `open` a group asks for (part: psd.scriptargs.HoursArg;
-- a pick's packed field names them from its first hour's slot) and the thing each adds to
-- (negative: a pick whose name number is negative subtracts it), as {names, targets}
local function open_day_names(part, open)
  local picks, bases, names, targets = part[2], part[5], {}, {}
  local suffix = filter and ':' .. filter
  for i = 1, #picks, 4 do
    local number = picks[i]
    local base = bases[number < 0 and -number or number]
    if math.floor((math.floor(base / 10) - 100) / 24) + 1 == open then
      local target = number < 0 and -picks[i + 1] or picks[i + 1]
      for h = picks[i + 2], picks[i + 3] do
        local name = slot_name(base + 10 * (h - 1))
        names[#names + 1], targets[#names + 1] = suffix and name .. suffix or name, target
      end
    end
  end
  return {names, targets}
end

-- add the hours of a month's open day `open` a group asks for: one HMGET of the day's hash
-- for those of that day only. Their names are made once per call and plan for every series
-- that reads the group with that day open (a leaderboard's users share their plan): making
-- them cost each user more than the HMGET
local function sum_open_day(key, part, open, his, los)
  local made = part.open_days or {}
  part.open_days = made
  local asked = made[open] or open_day_names(part, open)
  made[open] = asked
  local names, targets = asked[1], asked[2]
  if #names == 0 then return end
  local vals = redis.call('HMGET', open_day_key(key, open), unpack(names))
  for j = 1, #vals do
    local v = vals[j]
    if v then
      local ti = targets[j]
      if #v < 16 then  -- add's common case inline: |lo| < 10^15, |v| < 10^15, exact
        local lo
        if ti > 0 then lo = los[ti] + v else ti = -ti; lo = los[ti] - v end
        if lo >= E15 or lo <= -E15 then his[ti], lo = carry(his[ti], lo) end
        los[ti] = lo
      elseif ti > 0 then
        his[ti], los[ti] = add(his[ti], los[ti], v)
      else
        his[-ti], los[-ti] = subtract(his[-ti], los[-ti], v)
      end
    end
  end
end

-- add the g-th group's hours packed in its month's hash, then those of its open day (vals,
-- off: as sum_hash returns them)
local function sum_hours(key, plan, g, his, los, vals, off)
  local part = plan.groups[g][3]
  local names, picks = part[1], part[2]
  if vals == nil then vals, off = redis.call('HMGET', key, unpack(names)), 0 end
  for i = 1, #picks, 4 do
    local number = picks[i]
    local raw = vals[off + (number < 0 and -number or number)]
    if raw then
      local ti = picks[i + 1]
      local hi, lo = his[ti], los[ti]
      if byte(raw, 1) == FIXED_BYTE then  -- numbers within ±2^31, summed exactly first
        local s = fixed_sum(raw, picks[i + 2], picks[i + 3])
        hi, lo = add_number(hi, lo, number > 0 and s or -s)
      else
        local hours = cmsgpack.unpack(raw)
        for h = picks[i + 2], picks[i + 3] do
          local x = hours[h]
          if x then hi, lo = add_number(hi, lo, number > 0 and x or -x) end
        end
      end
      his[ti], los[ti] = hi, lo
    end
  end
  local open = open_in(part, vals[off + #names])
  if open then sum_open_day(key, part, open, his, los) end
end
