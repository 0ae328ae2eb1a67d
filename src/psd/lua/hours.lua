-- hours.lua: included by write_metric.lua (after limits.lua) and sum.lua where they say
-- "-- #include hours.lua": where a user's hour sums go (psd/keys.py names the layout).
--
-- A month's hash {uid}:mYYYYMM keeps, besides its days, the hours of its days packed by
-- half-day: field "h<(2 * (day - 1) + half) * 10 + thing>" (per type: the same, then
-- ":<atid>"); its hours numbered 1 to 12 from the half-day's first, either "F" then twelve
-- big-endian int32 (FIXED: read in one call into a list; for a half-day of three hours or
-- more within ±2^31) or msgpack {number = sum, ...} of those it has (fewer bytes for a
-- sparse one). Every write adds to them, a stream's latest day too, so a month is two dozen
-- packed fields (a compact listpack) instead of ~1,500 plain ones (a hashtable, ~70 bytes a
-- field), and a read asks its month's hash for every hour it needs. The month's field "o"
-- says the latest day a stream has written as a negative number ("-5"; "0": none since the
-- month was left; counters.lua). Earlier versions of psd kept that day's hours as plain
-- counters in a hash of its own, {uid}:dYYYYMMDD, named as the month's hour children
-- ("<(100 + 24 * (day - 1) + hour) * 10 + thing>"), with "o" naming it (a positive day):
-- reads add such an open day's hours, and the first write to its month packs them into
-- the month and deletes its hash (close_day). Hours written as plain fields of the month's
-- hash by earlier versions of psd stay there (a read adds them).
--
-- Hour sums are kept within ±2^53 (HOUR_LIMIT), where packed Lua numbers are exact.
local HOUR_LIMIT = 2^53

-- the packed field of an hour of day `dom` of a thing; suffix "" or ":<atid>" (the twin's)
local function packed_name(dom, hour, thing, suffix)
  return 'h' .. ((2 * (dom - 1) + (hour >= 12 and 1 or 0)) * 10 + thing) .. suffix
end

-- the hash of day `dom` of a month's hash: {uid}:dYYYYMMDD (a twin's of keyspace layout 2,
-- {uid}:tmYYYYMM: {uid}:tdYYYYMMDD)
local function day_key(month_key, dom)
  return (month_key:gsub('m(%d+)$', 'd%1')) .. (dom < 10 and '0' .. dom or dom)
end

local FIXED = '>' .. string.rep('i4', 12)
local FIXED_TAG, FIXED_BYTE, FIXED_LIMIT = 'F', 70, 2^31

-- a packed field's hours, {number = sum} (0 or nil: none); raw false (absent) for none: a
-- table with room for the twelve (hours added one by one to a table grown an entry at a
-- time would have it made again at every power of two)
local function unpack_hours(raw)
  if not raw then return {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil} end
  if string.byte(raw, 1) == FIXED_BYTE then
    return {struct.unpack(FIXED, raw, 2)}  -- its 13th: struct's next position, unread
  end
  return cmsgpack.unpack(raw)
end

-- a packed field's value: fixed for three hours or more, all within ±2^31; else msgpack
local function pack_hours(hours)
  local count, small = 0, true
  for n = 1, 12 do
    local x = hours[n]
    if x and x ~= 0 then
      count = count + 1
      if x >= FIXED_LIMIT or x <= -FIXED_LIMIT then small = false end
    end
  end
  if count == 0 then return nil end
  if count < 3 or not small then
    local sparse = {}
    for n = 1, 12 do
      local x = hours[n]
      if x and x ~= 0 then sparse[n] = x end
    end
    return cmsgpack.pack(sparse)
  end
  local h = hours
  return FIXED_TAG .. struct.pack(FIXED, h[1] or 0, h[2] or 0, h[3] or 0, h[4] or 0,
    h[5] or 0, h[6] or 0, h[7] or 0, h[8] or 0, h[9] or 0, h[10] or 0, h[11] or 0, h[12] or 0)
end

-- an hour's number in its packed half-day (1 to 12)
local function hour_number(hour) return hour % 12 + 1 end

-- packed fields as this call last read or wrote them (key .. '\n' .. field -> value, or
-- false: absent): a sparse user's write reads its half-day once, with the open day
local packed_known = {}
local function hours_begin() packed_known = {} end

local function known_of(key)
  local of_key = packed_known[key]
  if of_key == nil then
    of_key = {}
    packed_known[key] = of_key
  end
  return of_key
end

local function packed_get(key, name)
  local of_key = known_of(key)
  local value = of_key[name]
  if value == nil then
    value = redis.call('HGET', key, name)
    of_key[name] = value
  end
  return value
end

-- set a packed field to a value (nil or false: none)
local function packed_set(key, name, value)
  if value then redis.call('HSET', key, name, value) else redis.call('HDEL', key, name) end
  known_of(key)[name] = value or false
end

-- add `adds` ({number = delta}) to a packed field of `key`: its new hours, or nil when one
-- would leave ±HOUR_LIMIT (nothing written then), and its value before (to take it back)
local function packed_sum(key, name, adds)
  local old = packed_get(key, name)
  local hours = unpack_hours(old)
  for n, delta in pairs(adds) do
    local x = (hours[n] or 0) + delta
    if x >= HOUR_LIMIT or x <= -HOUR_LIMIT then return nil, old end
    hours[n] = x ~= 0 and x or nil
  end
  return hours, old
end

local function put_packed(key, name, hours)
  packed_set(key, name, pack_hours(hours))
end

-- put every packed field of `due` ({key, name, hours, ...} each, a key's together): one
-- HSET a key (and one HDEL of those left empty), where a write sets every type's half-day
-- and its type's
local function put_packed_due(due)
  local i = 1
  while i <= #due do
    local key = due[i][1]
    local of_key, sets, dels = known_of(key), {}, {}
    while i <= #due and due[i][1] == key do
      local name, value = due[i][2], pack_hours(due[i][3])
      if value then
        sets[#sets + 1], sets[#sets + 2] = name, value
      else
        dels[#dels + 1] = name
      end
      of_key[name] = value or false
      i = i + 1
    end
    if #sets > 0 then redis.call('HSET', key, unpack(sets)) end
    if #dels > 0 then redis.call('HDEL', key, unpack(dels)) end
  end
end

-- pack the hours of day `dom` of `month` (every type and each type) into the month and delete
-- the day's hash. An hour whose packed sum would leave ±HOUR_LIMIT (only if the day had
-- packed hours before it was opened, which psd does not write) is added to a plain field
-- instead, as earlier versions kept hours: a read adds those too.
local function close_day(month, dom)
  local day = day_key(month, dom)
  local flat = redis.call('HGETALL', day)
  local packs, plain, names = {}, {}, {}  -- names: packed name by its number (every type's)
  for i = 1, #flat, 2 do
    local f = flat[i]
    local colon = string.find(f, ':', 1, true)
    local slot = (colon and string.sub(f, 1, colon - 1) or f) + 0
    local thing = slot % 10
    local hour = ((slot - thing) / 10 - 100) % 24
    -- packed_name(dom, hour, thing, suffix) and hour_number(hour), inlined: this runs for
    -- every field of a day, and a number turned into a string costs a printf
    local number = (2 * (dom - 1) + (hour >= 12 and 1 or 0)) * 10 + thing
    local name = names[number]
    if name == nil then
      name = 'h' .. number
      names[number] = name
    end
    if colon then name = name .. string.sub(f, colon) end
    local adds, n = packs[name], hour % 12 + 1
    if adds == nil then
      adds = {}
      packs[name], plain[name] = adds, {}
    end
    adds[n] = (adds[n] or 0) + flat[i + 1]
    plain[name][n] = f
  end
  for name, adds in pairs(packs) do
    local hours = packed_sum(month, name, adds)
    if hours == nil then
      hours = unpack_hours(packed_get(month, name))
      for n, delta in pairs(adds) do
        redis.call('HINCRBY', month, plain[name][n], delta)
      end
    end
    put_packed(month, name, hours)
  end
  redis.call('DEL', day)
end

-- the month's "o" as a number (0: none; negative: the latest day marked; positive: an
-- earlier psd's open day), and how many hours its packed field `name` holds, read with it
-- and with `typed` (the same field of a type): a write adds to both
local function open_day_of(month, name, typed)
  local vals = redis.call('HMGET', month, 'o', name, typed)
  local known = known_of(month)
  known[name], known[typed] = vals[2], vals[3]
  local held = 0
  for _, x in pairs(unpack_hours(vals[2])) do
    if x ~= 0 then held = held + 1 end
  end
  return vals[1] and vals[1] + 0 or 0, held
end

-- set the month's "o" to `to`, closing the open day `from` (an earlier psd's, if positive)
local function move_open_day(month, from, to)
  if from > 0 then close_day(month, from) end
  redis.call('HSET', month, 'o', to)
end
