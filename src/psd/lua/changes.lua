-- changes.lua: included where a script says "-- #include changes.lua" (after record.lua):
-- how a user's changes of a UTC day are kept in {uid}:cYYYYMMDD.
--   "a"    the day's contexts, msgpack {thing, aid, atid, thing, aid, atid, ...}: the
--          activities (and their types) that changed that day, numbered from 1
--   "<h>"  hour h (0..23) of the day: its changes as msgpack list of numbers, in the order
--          written. A change is two numbers, its time code and its amount; a number of
--          CTX_BASE or more switches the context of the changes after it (each hour starts
--          in context 1). The time is coded delta-of-delta: with s the second in the hour
--          and d = s - (the previous change's s), starting from s = d = 0, a code is d minus
--          the previous d. A change every ten minutes costs one byte for its time after the
--          hour's first two, and a sparse hour a few bytes a change.
-- One small hash a day (a listpack of ~25 fields for a dense user) instead of a field an
-- hour and activity in {uid}:acts (a hashtable field costs ~70 bytes); a read's edge asks
-- for one field and unpacks it in one call. The key expires with the minute retention.
local CTX_BASE = 1048576
local CONTEXTS = 'a'

-- the UTC date YYYYMMDD of a day number (days since 1970-01-01: H. Hinnant's
-- civil_from_days), names cached by day
local day_names = {}
local function day_name(day)
  local name = day_names[day]
  if name == nil then
    local z = day + 719468
    local era = math.floor(z / 146097)
    local doe = z - era * 146097
    local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                            - math.floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local d = doy - math.floor((153 * mp + 2) / 5) + 1
    local m = mp < 10 and mp + 3 or mp - 9
    local y = yoe + era * 400 + (m <= 2 and 1 or 0)
    name = string.format('%04d%02d%02d', y, m, d)
    day_names[day] = name
  end
  return name
end

-- the changes key of a day of the user whose activity state is `acts` ({uid}:acts)
local function changes_key(acts, day)
  return string.sub(acts, 1, -5) .. 'c' .. day_name(day)
end

-- an hour's changes as a flat list {context, second in the hour, amount, ...}
local function decode_hour(raw)
  local items, out = cmsgpack.unpack(raw), {}
  local ctx, sec, d, i, n, count = 1, 0, 0, 1, 0, #items
  while i <= count do
    local v = items[i]
    if v >= CTX_BASE then
      ctx, i = v - CTX_BASE, i + 1
    else
      d = d + v
      sec = sec + d
      out[n + 1], out[n + 2], out[n + 3] = ctx, sec, items[i + 1]
      n, i = n + 3, i + 2
    end
  end
  return out
end
