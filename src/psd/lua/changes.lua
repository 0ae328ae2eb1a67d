-- changes.lua: included where a script says "-- #include changes.lua" (after record.lua):
-- how a user's changes of a UTC day are kept in {uid}:cYYYYMMDD.
--   "a"    the day's contexts, msgpack {thing, aid, atid, thing, aid, atid, ...}: the
--          activities (and their types) that changed that day, numbered from 1
--   "<h>"  hour h (0..23) of the day: its changes as a msgpack list of numbers, context by
--          context: a number CTX_MARK - n (-8193 for context 1) starts the changes of
--          context n (the list starts in context 1 without one); a change is two numbers,
--          its time code and its amount. The time is coded delta-of-delta within a context:
--          with s the second in the hour and d = s - (the previous change's s), starting
--          from s = d = 0, a code is d minus the previous d (within ±7,198: never a mark). A
--          change every ten minutes costs one byte for its time after its context's first
--          two in the hour, and a sparse hour a few bytes a change.
--   "s"    "0": no activity of a single change has it in the day; "1" (or none): one may
--          (daystate.lua says who writes it, activities.lua who reads it)
-- One small hash a day (a listpack of ~25 fields for a dense user) instead of a field an
-- hour and activity in {uid}:acts (a hashtable field costs ~70 bytes); a read's edge asks
-- for one field and unpacks it in one call. The key expires with the minute retention.
local CTX_MARK = -8192
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
    if v <= CTX_MARK then
      ctx, sec, d, i = CTX_MARK - v, 0, 0, i + 1
    else
      d = d + v
      sec = sec + d
      out[n + 1], out[n + 2], out[n + 3] = ctx, sec, items[i + 1]
      n, i = n + 3, i + 2
    end
  end
  return out
end

-- an hour's list from its changes by context (context -> {second, amount, ...}), contexts
-- ascending, each in the order given; the groups are spent (a day's state is forgotten once
-- written: daystate.lua's save_days). Most hours have one context, the first (no mark):
-- theirs is coded in its own list, in place (a copy cost a table and the C stack's copy of
-- its values). (No local of its own: write_metric.lua's main chunk is at Lua's 200.)
local function encode_hour(groups)
  local first = next(groups)
  if first == 1 and next(groups, 1) == nil then
    local recs, sec, d = groups[1], 0, 0
    for j = 1, #recs, 2 do
      local at = recs[j]
      local nd = at - sec
      recs[j] = nd - d
      sec, d = at, nd
    end
    return cmsgpack.pack(recs)
  end
  local order, items = {}, {}
  for ctx, _ in pairs(groups) do order[#order + 1] = ctx end
  if #order > 1 then table.sort(order) end
  for k, ctx in ipairs(order) do
    if k > 1 or ctx ~= 1 then items[#items + 1] = CTX_MARK - ctx end
    local recs, sec, d = groups[ctx], 0, 0
    for j = 1, #recs, 2 do
      local nd = recs[j] - sec
      local n = #items
      items[n + 1], items[n + 2] = nd - d, recs[j + 1]
      sec, d = recs[j], nd
    end
  end
  return cmsgpack.pack(items)
end
